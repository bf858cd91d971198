package definition

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// Wait steps: a step that waits for an outside event (sendEvent, or its
// callback URL) and outputs it.

// MaxWaitTimeout is the longest a wait step may wait, and how long it
// waits when it sets no timeout.
const MaxWaitTimeout = 30 * 24 * time.Hour

// MatchCostLimit bounds one evaluation of a wait step's `match`. A match
// is evaluated where its event arrives: in the sendEvent request, for every
// step waiting for the event's name (up to runs.MaxWaitsPerEvent), and by
// the worker starting a wait, for each stored event it considers. So it
// is held to a far smaller budget than other expressions (exprCostLimit):
// an event matching its 1,000 waits costs at most what one transform may.
const MatchCostLimit = 10_000

// matchTimeout bounds the time of one match evaluation.
const matchTimeout = 50 * time.Millisecond

// matchEnv is the expression environment plus `event`.
var matchEnv = sync.OnceValue(func() *cel.Env {
	e, err := celEnv().Extend(cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		panic("definition: building the match environment: " + err.Error())
	}
	return e
})

// matchPrograms caches compiled match expressions, bounded like programs.
var (
	matchPrograms sync.Map // string -> *compiled
	matchCached   int64
	matchMu       sync.Mutex
)

func compileMatch(expr string) *compiled {
	if v, ok := matchPrograms.Load(expr); ok {
		return v.(*compiled)
	}
	c := &compiled{}
	if strings.TrimSpace(expr) == "" {
		c.err = errors.New("empty expression")
	} else if ast, iss := matchEnv().Compile(expr); iss != nil && iss.Err() != nil {
		c.err = formatIssues(iss)
	} else if prg, err := matchEnv().Program(ast,
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(MatchCostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
	); err != nil {
		c.err = err
	} else {
		c.ast, c.prg = ast, prg
	}
	matchMu.Lock()
	defer matchMu.Unlock()
	if matchCached < maxCachedPrograms {
		if _, loaded := matchPrograms.LoadOrStore(expr, c); !loaded {
			matchCached++
		}
	}
	return c
}

// EvalMatch evaluates a wait step's match with event in scope besides the
// usual variables. A result that is not a bool is an error, like an `if`.
func EvalMatch(expr string, env Env, event map[string]any) (bool, error) {
	c := compileMatch(expr)
	if c.err != nil {
		return false, fmt.Errorf("compile %q: %w", expr, c.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), matchTimeout)
	defer cancel()
	act := activation(env)
	act["event"] = event
	out, _, err := c.prg.ContextEval(ctx, act)
	if err != nil {
		var ce interpreter.EvalCancelledError
		switch {
		case ctx.Err() != nil:
			err = limitError("evaluation took longer than %s", matchTimeout)
		case errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded:
			err = limitError("evaluation cost more than %d (the cap of a match)", MatchCostLimit)
		case errors.As(err, &ce):
			err = fmt.Errorf("%w: %s", ErrLimit, ce.Message)
		}
		return false, fmt.Errorf("evaluate %q: %w", truncate(expr, 200), err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: got %s, want bool", truncate(expr, 200), out.Type().TypeName())
	}
	return bool(b), nil
}

// checkWait applies a wait step's own rules: its match compiles with
// `event` in scope, gives a bool, and reads only its dependencies.
func (v *validator) checkWait(path string, s *Step, scope exprScope) {
	if s.Match == "" {
		return
	}
	path += ".match"
	c := compileMatch(s.Match)
	if c.err != nil {
		v.add(path, "invalid expression %q: %v", s.Match, c.err)
		return
	}
	if t := c.ast.OutputType(); t.Kind() != types.BoolKind && t.Kind() != types.DynKind {
		v.add(path, "expression %q must produce a bool, not %s", s.Match, t)
	}
	ids, dynamic := stepRefs(c.ast)
	if v.d.reads == nil {
		v.d.reads = map[string][]string{}
	}
	for _, id := range ids {
		if !slices.Contains(v.d.reads[scope.stepID], id) {
			v.d.reads[scope.stepID] = append(v.d.reads[scope.stepID], id)
		}
		_, exists := v.index[id]
		switch {
		case !exists:
			v.add(path, "unknown step %q in expression %q", id, s.Match)
		case !scope.ancestors[id]:
			v.add(path, "step %s is not a dependency of %s; add it to needs to read its output", id, scope.stepID)
		}
	}
	if dynamic {
		v.add(path, "expression %q must read steps by literal id (steps.<id>) so its dependencies can be checked", s.Match)
	}
}
