package definition

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
)

// Concurrency is a definition's `concurrency`: at most Limit unfinished runs
// of the workflow in an environment share a key (the value of Key, a CEL
// expression over `input`; without one, the whole workflow in the
// environment is one key). OnLimit says what a new run does at the limit:
// queue (it waits, created queued, until a run with its key finishes),
// cancel_in_progress (the oldest runs with its key are cancelled and it
// starts) or skip_new (it is created cancelled, error class
// concurrency_skipped). internal/runs enforces it.
type Concurrency struct {
	Limit   int    `json:"limit"`
	Key     string `json:"key,omitempty"`
	OnLimit string `json:"onLimit,omitempty"`
}

// What a new run does at its key's limit.
const (
	OnLimitQueue            = "queue"
	OnLimitCancelInProgress = "cancel_in_progress"
	OnLimitSkipNew          = "skip_new"
)

// MaxConcurrencyKey is the longest key stored as it is; a longer value is
// stored as its SHA-256 (hex), which keeps it distinct.
const MaxConcurrencyKey = 200

// Mode is OnLimit with its default, queue.
func (c *Concurrency) Mode() string {
	if c.OnLimit == "" {
		return OnLimitQueue
	}
	return c.OnLimit
}

// checkConcurrency checks the key expression: it compiles, type-checks and
// reads only the run input (no step outputs, no env, no run fields), so it
// can be evaluated before the run starts.
func (v *validator) checkConcurrency() {
	c := v.d.Concurrency
	if c == nil || c.Key == "" {
		return
	}
	path := "$.concurrency.key"
	ce := compileExpr(c.Key)
	if ce.err != nil {
		v.add(path, "invalid expression %q: %v", c.Key, ce.err)
		return
	}
	if ids, dynamic := stepRefs(ce.ast); len(ids) > 0 || dynamic {
		v.add(path, "a concurrency key is evaluated before any step runs: it may read only input, not steps")
		return
	}
	for _, name := range []string{"env", "run"} {
		if readsVariable(ce.ast, name) {
			v.add(path, "a concurrency key may read only input, not %s", name)
			return
		}
	}
	out, typeErrs := v.typing.check(c.Key)
	if v.strict {
		for _, msg := range typeErrs {
			v.add(path, "type error in %q: %s", truncate(c.Key, 200), msg)
		}
		if out != nil {
			switch out.kind {
			case shapeString, shapeInt, shapeBool, shapeDyn, shapeDouble:
			default:
				v.add(path, "a concurrency key must produce a string, a number or a bool, not %s", out.celType())
			}
		}
	}
}

// MaxConcurrencyLimit is the largest limit a concurrency setting may have.
const MaxConcurrencyLimit = 10000

// CheckConcurrency checks a concurrency setting made outside a definition
// (a per-environment override, internal/concurrency) by the rules of a
// definition's: limit 1 to MaxConcurrencyLimit, a known onLimit, and a key
// that compiles, reads only input and, when d is not nil, type-checks
// against d's input schema (d: the version deployed where it applies).
// Problems' paths are relative to the setting: "$.limit", "$.key",
// "$.onLimit".
func CheckConcurrency(c *Concurrency, d *Definition) []Problem {
	var input json.RawMessage
	if d != nil {
		input = d.Input
	}
	v := &validator{d: &Definition{Input: input, Concurrency: c}, strict: d != nil, typing: newTyping(input)}
	if c.Limit < 1 || c.Limit > MaxConcurrencyLimit {
		v.add("$.limit", "must be between 1 and %d", MaxConcurrencyLimit)
	}
	switch c.OnLimit {
	case "", OnLimitQueue, OnLimitCancelInProgress, OnLimitSkipNew:
	default:
		v.add("$.onLimit", "must be %s, %s or %s", OnLimitQueue, OnLimitCancelInProgress, OnLimitSkipNew)
	}
	v.checkConcurrency()
	for i := range v.problems {
		if v.problems[i].Path == "$.concurrency.key" {
			v.problems[i].Path = "$.key"
		}
	}
	return v.problems
}

// ConcurrencyKey evaluates the definition's concurrency key for a run
// input (the value as expressions see it, InputValue). Without a key
// expression it is "" (one key for the workflow in the environment). A
// value that is not a string is keyed by its JSON text; a key longer than
// MaxConcurrencyKey by its SHA-256.
func (d *Definition) ConcurrencyKey(input any) (string, error) {
	return d.Concurrency.KeyOf(input)
}

// KeyOf evaluates the setting's key for a run input, as ConcurrencyKey
// does for a definition's.
func (c *Concurrency) KeyOf(input any) (string, error) {
	if c == nil || c.Key == "" {
		return "", nil
	}
	v, err := Eval("$.concurrency.key", c.Key, Env{Input: input})
	if err != nil {
		return "", err
	}
	var key string
	switch x := v.(type) {
	case string:
		key = x
	case int64, float64, bool:
		b, _ := json.Marshal(x)
		key = string(b)
	default:
		return "", fmt.Errorf("the concurrency key %q is a %T, not a string, a number or a bool", truncate(c.Key, 200), v)
	}
	if len(key) > MaxConcurrencyKey {
		sum := sha256.Sum256([]byte(key))
		key = "sha256:" + hex.EncodeToString(sum[:])
	}
	return key, nil
}

// readsVariable reports whether an expression names the top-level variable
// name (an identifier, outside a comprehension that shadows it).
func readsVariable(a *cel.Ast, name string) bool {
	found := false
	celast.PostOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() == celast.IdentKind && e.AsIdent() == name {
			found = true
		}
	}))
	return found
}
