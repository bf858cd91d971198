package definition

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
	"cel.dev/cel-go/interpreter"
)

// Env is what expressions can see. Steps maps a step id to {"output": ...};
// the run state machine only puts the outputs of a step's ancestors there. Values should
// be plain JSON values (maps, slices, strings, int64 and float64 as the
// number rule makes them, bools, nil): Definition.InputValue and
// Definition.OutputValue build them.
type Env struct {
	Input any
	Steps map[string]any
	Run   map[string]any
	Env   map[string]any
	// Item and Index are a map step's current item and its position
	// (mapstep.go); validation allows them only in a map's inner step.
	Item  any
	Index int64
}

// exprCostLimit bounds the work a single evaluation may do, since
// expressions come from users and run inside workers.
const exprCostLimit = 10_000_000

var celEnv = sync.OnceValue(func() *cel.Env {
	base, err := cel.NewEnv(
		cel.Variable("input", cel.DynType),
		cel.Variable("steps", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("run", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("env", cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable("item", cel.DynType),
		cel.Variable("index", cel.IntType),
		// A double field compared with an int literal (`input.price > 5`)
		// is what people write; CEL's arithmetic stays strictly typed.
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Encoders(),
		ext.Math(),
		ext.Lists(),
		ext.Sets(),
		ext.Bindings(),
	)
	if err != nil {
		panic("definition: building CEL environment: " + err.Error())
	}
	// The functions that build large results or compare all pairs check
	// their arguments against the caps first (limits.go).
	guarded, err := guardedFunctions(base)
	if err != nil {
		panic("definition: guarding CEL functions: " + err.Error())
	}
	e, err := base.Extend(guarded...)
	if err != nil {
		panic("definition: building CEL environment: " + err.Error())
	}
	return e
})

type compiled struct {
	ast *cel.Ast
	prg cel.Program
	err error

	// tracking: the same expression planned to record every
	// subexpression's value, built when an evaluation fails, to say
	// where and on which types (explain).
	trackOnce sync.Once
	tracking  cel.Program
}

// programs caches compilation (including failures) per expression text: the
// run state machine evaluates the same few expressions for every run, and checking and
// planning dominate the cost of evaluating them.
var programs sync.Map // string -> *compiled

// cachedPrograms bounds the cache: expressions arrive through the API, and
// a client submitting endless distinct ones must not grow memory forever.
// Past the bound, expressions are still compiled, just not remembered.
var cachedPrograms atomic.Int64

const maxCachedPrograms = 50_000

func compileExpr(expr string) *compiled {
	if v, ok := programs.Load(expr); ok {
		return v.(*compiled)
	}
	c := &compiled{}
	if strings.TrimSpace(expr) == "" {
		c.err = errors.New("empty expression")
	} else if ast, iss := celEnv().Compile(expr); iss != nil && iss.Err() != nil {
		c.err = formatIssues(iss)
	} else if prg, err := celEnv().Program(ast,
		cel.EvalOptions(cel.OptOptimize),
		cel.CostLimit(exprCostLimit),
		cel.InterruptCheckFrequency(interruptEvery),
	); err != nil {
		c.err = err
	} else {
		c.ast, c.prg = ast, prg
	}
	if cachedPrograms.Load() >= maxCachedPrograms {
		return c
	}
	v, loaded := programs.LoadOrStore(expr, c)
	if !loaded {
		cachedPrograms.Add(1)
	}
	return v.(*compiled)
}

// formatIssues keeps CEL's messages but drops its multi-line source snippets,
// which do not fit in a single Problem message.
func formatIssues(iss *cel.Issues) error {
	var msgs []string
	for _, e := range iss.Errors() {
		msgs = append(msgs, fmt.Sprintf("%d:%d: %s", e.Location.Line(), e.Location.Column()+1, e.Message))
	}
	return errors.New(strings.Join(msgs, "; "))
}

// Eval evaluates a CEL expression and returns a plain JSON-compatible value:
// map[string]any, []any, string, int64, float64, bool or nil. Timestamps and
// durations become RFC 3339 and Go duration strings, bytes become base64.
// An expression that passes a cap (limits.go) fails with ErrLimit. path is
// where the expression is in its definition ($.steps[0].if); errors name
// it.
func Eval(path, expr string, env Env) (any, error) {
	var b budget
	return eval(path, expr, env, &b)
}

// eval is Eval spending the result's size on b, which callers building one
// output from several expressions share.
func eval(path, expr string, env Env, b *budget) (any, error) {
	c := compileExpr(expr)
	if c.err != nil {
		return nil, fmt.Errorf("compile %q at %s: %w", truncate(expr, 200), path, c.err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), EvalTimeout)
	defer cancel()
	act := activation(env)
	out, _, err := c.prg.ContextEval(ctx, act)
	if err != nil {
		err = evalError(ctx, err)
		if !errors.Is(err, ErrLimit) {
			err = c.explain(act, err)
		}
		return nil, fmt.Errorf("evaluate %q at %s: %w", truncate(expr, 200), path, err)
	}
	v, err := toJSONValue(out, b)
	if err != nil {
		return nil, fmt.Errorf("evaluate %q at %s: %w", truncate(expr, 200), path, err)
	}
	return v, nil
}

// evalError names the cap an interrupted evaluation ran into.
func evalError(ctx context.Context, err error) error {
	var ce interpreter.EvalCancelledError
	switch {
	case errors.Is(err, ErrLimit):
		return err
	case ctx.Err() != nil:
		return limitError("evaluation took longer than %s", EvalTimeout)
	case errors.As(err, &ce) && ce.Cause == interpreter.CostLimitExceeded:
		return limitError("evaluation cost more than %d", exprCostLimit)
	case errors.As(err, &ce):
		return fmt.Errorf("%w: %s", ErrLimit, ce.Message)
	}
	return err
}

// EvalBool evaluates a condition such as a step's `if`; a non-bool result is
// an error rather than being coerced, so typos do not silently skip steps.
func EvalBool(path, expr string, env Env) (bool, error) {
	v, err := Eval(path, expr, env)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q at %s: got %s, want bool", truncate(expr, 200), path, describe(v))
	}
	return b, nil
}

// describe names a result's CEL type.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case int64:
		return "int"
	case float64:
		return "double"
	case string:
		return "string"
	case []any:
		return "list"
	case map[string]any:
		return "map"
	}
	return fmt.Sprintf("%T", v)
}

func activation(env Env) map[string]any {
	orEmpty := func(m map[string]any) map[string]any {
		if m == nil {
			return map[string]any{}
		}
		return m
	}
	return map[string]any{
		"input": env.Input,
		"steps": orEmpty(env.Steps),
		"run":   orEmpty(env.Run),
		"env":   orEmpty(env.Env),
		"item":  env.Item,
		"index": env.Index,
	}
}

// toJSONValue converts a CEL value, spending its size on b: a result that
// aliases one list many times fails at the cap instead of being expanded.
func toJSONValue(v ref.Val, b *budget) (any, error) {
	switch v.(type) {
	case types.String, types.Bytes, traits.Mapper, traits.Lister:
	default:
		if err := b.spend(1, 8); err != nil {
			return nil, err
		}
	}
	switch v := v.(type) {
	case types.Null:
		return nil, nil
	case types.Bool:
		return bool(v), nil
	case types.Int:
		return int64(v), nil
	case types.Uint:
		if v <= math.MaxInt64 {
			return int64(v), nil
		}
		return float64(v), nil
	case types.Double:
		return float64(v), nil
	case types.String:
		if err := b.spend(1, len(v)); err != nil {
			return nil, err
		}
		return string(v), nil
	case types.Bytes:
		if err := b.spend(1, base64.StdEncoding.EncodedLen(len(v))); err != nil {
			return nil, err
		}
		return base64.StdEncoding.EncodeToString(v), nil
	case types.Timestamp:
		return v.Time.UTC().Format(time.RFC3339Nano), nil
	case types.Duration:
		return v.Duration.String(), nil
	case *types.Err:
		return nil, v
	case *types.Optional:
		if !v.HasValue() {
			return nil, nil
		}
		return toJSONValue(v.GetValue(), b)
	case traits.Mapper:
		if err := b.spend(1, 2); err != nil {
			return nil, err
		}
		out := map[string]any{}
		for it := v.Iterator(); it.HasNext() == types.True; {
			k := it.Next()
			key, ok := k.(types.String)
			if !ok {
				return nil, fmt.Errorf("map key %v is %s, only string keys can be represented in JSON", k, k.Type().TypeName())
			}
			if err := b.spend(1, len(key)+3); err != nil {
				return nil, err
			}
			e, err := toJSONValue(v.Get(k), b)
			if err != nil {
				return nil, err
			}
			out[string(key)] = e
		}
		return out, nil
	case traits.Lister:
		n, ok := v.Size().(types.Int)
		if !ok {
			return nil, errors.New("list without a size")
		}
		if err := b.spend(1, 2); err != nil {
			return nil, err
		}
		out := make([]any, 0, min(int(n), MaxValues))
		for it := v.Iterator(); it.HasNext() == types.True; {
			e, err := toJSONValue(it.Next(), b)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	}
	if types.IsUnknown(v) {
		return nil, errors.New("result depends on unknown values")
	}
	return nil, fmt.Errorf("%s values cannot be represented in JSON", v.Type().TypeName())
}

// segment is a piece of a {{ }} template: literal text or an expression.
type segment struct {
	text   string
	isExpr bool
}

// parseTemplate splits s into literal text and {{ expr }} parts. The closing
// braces are found with CEL string literals and nested braces skipped, so
// `{{ {'a': {'b': '}}'}} }}` is one expression.
func parseTemplate(s string) ([]segment, error) {
	var segs []segment
	for len(s) > 0 {
		start := strings.Index(s, "{{")
		if start < 0 {
			segs = append(segs, segment{text: s})
			break
		}
		if start > 0 {
			segs = append(segs, segment{text: s[:start]})
		}
		body := s[start+2:]
		end, ok := findTemplateEnd(body)
		if !ok {
			return nil, fmt.Errorf("unterminated {{ starting at %q", truncate(s[start:], 30))
		}
		expr := strings.TrimSpace(body[:end])
		if expr == "" {
			return nil, errors.New("empty {{ }} expression")
		}
		segs = append(segs, segment{text: expr, isExpr: true})
		s = body[end+2:]
	}
	return segs, nil
}

func findTemplateEnd(s string) (int, bool) {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\'', '"':
			quote := string(c)
			if strings.HasPrefix(s[i:], strings.Repeat(quote, 3)) {
				quote = strings.Repeat(quote, 3)
			}
			j := i + len(quote)
			for j < len(s) && !strings.HasPrefix(s[j:], quote) {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return 0, false
			}
			i = j + len(quote) - 1
		case '{':
			depth++
		case '}':
			if depth > 0 {
				depth--
			} else if i+1 < len(s) && s[i+1] == '}' {
				return i, true
			}
		}
	}
	return 0, false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Interpolate renders a string with {{ expr }} placeholders. String results
// are inserted as they are; anything else is inserted JSON-encoded (so a
// missing value renders as null rather than vanishing).
func Interpolate(path, tmpl string, env Env) (string, error) {
	var b budget
	return interpolate(path, tmpl, env, &b)
}

// interpolate is Interpolate spending on b; the rendered string is capped
// at MaxBytes too.
func interpolate(path, tmpl string, env Env, bud *budget) (string, error) {
	segs, err := parseTemplate(tmpl)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	var b strings.Builder
	for _, s := range segs {
		if !s.isExpr {
			b.WriteString(s.text)
			continue
		}
		v, err := eval(path, s.text, env, bud)
		if err != nil {
			return "", err
		}
		if str, ok := v.(string); ok {
			b.WriteString(str)
		} else {
			enc, err := marshalJSON(v)
			if err != nil {
				return "", fmt.Errorf("encode result of %q: %w", s.text, err)
			}
			b.WriteString(enc)
		}
		if b.Len() > MaxBytes {
			return "", limitError("the rendered string is longer than %d MiB", MaxBytes>>20)
		}
	}
	return b.String(), nil
}

func marshalJSON(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// EvalTemplateValue walks a JSON value (such as an http body) and
// interpolates every string leaf. A leaf that is exactly one placeholder,
// like "{{ steps.shape.output }}", takes the expression's value with its own
// type, so numbers, objects and lists can be passed through unchanged; any
// other string stays a string. Map keys are not interpolated.
func EvalTemplateValue(path string, v any, env Env) (any, error) {
	var b budget
	return mapLeaves(path, v, func(path, str string) (any, error) {
		segs, err := parseTemplate(str)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if len(segs) == 1 && segs[0].isExpr {
			return eval(path, segs[0].text, env, &b)
		}
		out, err := interpolate(path, str, env, &b)
		if err == nil {
			err = b.spend(0, len(out))
		}
		return out, err
	})
}

// mapLeaves rebuilds a JSON value with every string leaf replaced by leaf's
// result, called with the leaf's path; other leaves are kept, numbers
// under the number rule.
func mapLeaves(path string, v any, leaf func(path, s string) (any, error)) (any, error) {
	switch v := v.(type) {
	case string:
		return leaf(path, v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for _, k := range sortedKeys(v) {
			e, err := mapLeaves(joinKey(path, k), v[k], leaf)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			r, err := mapLeaves(joinIndex(path, i), e, leaf)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	default:
		return normalizeScalar(v), nil
	}
}

// EvalOutput evaluates a transform step's output: a JSON string is one
// expression; in an object or array every string leaf is an expression and
// other leaves are literals.
func EvalOutput(path string, raw json.RawMessage, env Env) (any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("%s: transform output is empty", path)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%s: transform output is not JSON: %w", path, err)
	}
	// One budget for the whole output: the caps are per step output.
	var b budget
	return mapLeaves(path, v, func(path, expr string) (any, error) { return eval(path, expr, env, &b) })
}

// sortedKeys makes evaluation order, and so the first error reported,
// deterministic.
func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// stepRefs lists the step ids an expression reads as steps.<id>,
// steps['<id>'] or their optional forms. dynamic reports any other use of
// `steps` (e.g. steps[x] or iterating it), whose targets cannot be known
// before the run.
func stepRefs(a *cel.Ast) (ids []string, dynamic bool) {
	seen := map[string]bool{}
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	isSteps := func(e celast.Expr, shadowed bool) bool {
		return !shadowed && e.Kind() == celast.IdentKind && e.AsIdent() == "steps"
	}
	literalString := func(e celast.Expr) (string, bool) {
		if e.Kind() != celast.LiteralKind {
			return "", false
		}
		s, ok := e.AsLiteral().(types.String)
		return string(s), ok
	}

	var walk func(e celast.Expr, shadowed bool)
	walk = func(e celast.Expr, shadowed bool) {
		switch e.Kind() {
		case celast.IdentKind:
			if isSteps(e, shadowed) {
				dynamic = true
			}
		case celast.SelectKind:
			sel := e.AsSelect()
			if isSteps(sel.Operand(), shadowed) {
				add(sel.FieldName())
				return
			}
			walk(sel.Operand(), shadowed)
		case celast.CallKind:
			call := e.AsCall()
			args := call.Args()
			switch call.FunctionName() {
			case operators.Index, operators.OptIndex, operators.OptSelect:
				if len(args) == 2 && isSteps(args[0], shadowed) {
					if id, ok := literalString(args[1]); ok {
						add(id)
						return
					}
				}
			}
			if call.IsMemberFunction() {
				walk(call.Target(), shadowed)
			}
			for _, arg := range args {
				walk(arg, shadowed)
			}
		case celast.ComprehensionKind:
			comp := e.AsComprehension()
			walk(comp.IterRange(), shadowed)
			walk(comp.AccuInit(), shadowed)
			inner := shadowed || comp.IterVar() == "steps" || comp.IterVar2() == "steps" || comp.AccuVar() == "steps"
			walk(comp.LoopCondition(), inner)
			walk(comp.LoopStep(), inner)
			walk(comp.Result(), inner)
		case celast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el, shadowed)
			}
		case celast.MapKind:
			for _, entry := range e.AsMap().Entries() {
				me := entry.AsMapEntry()
				walk(me.Key(), shadowed)
				walk(me.Value(), shadowed)
			}
		case celast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value(), shadowed)
			}
		}
	}
	walk(a.NativeRep().Expr(), false)
	return ids, dynamic
}
