package evals

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
)

// Scorer kinds, as stored.
const (
	ScorerExact      = "EXACT"
	ScorerJSONFields = "JSON_FIELDS"
	ScorerCEL        = "CEL"
	ScorerNumeric    = "NUMERIC"
	ScorerJudge      = "JUDGE"
)

// Scorer compares a candidate's output with the baseline's.
type Scorer struct {
	Kind        string   `json:"kind"`
	IgnorePaths []string `json:"ignorePaths,omitempty"`
	Expression  string   `json:"expression,omitempty"`
	Path        string   `json:"path,omitempty"`
	Tolerance   float64  `json:"tolerance,omitempty"`
	Relative    bool     `json:"relative,omitempty"`
	// JUDGE: a credential (openai or anthropic) of the evaluation's
	// environment, the model, what to judge by, and the reply's cap.
	Credential string `json:"credential,omitempty"`
	Model      string `json:"model,omitempty"`
	Criteria   string `json:"criteria,omitempty"`
	MaxTokens  int    `json:"maxTokens,omitempty"`
}

// Score is one scorer's result on one example: pass or fail, and for a
// CEL scorer returning a number, its sign (improved or regressed).
type Score struct {
	Kind    string  `json:"kind"`
	Pass    bool    `json:"pass"`
	Value   float64 `json:"value"`
	Message string  `json:"message,omitempty"`
	// Error: the scorer could not judge (a JUDGE whose model failed); the
	// example's verdict is ERROR.
	Error bool `json:"error,omitempty"`
	// CostMicroUSD is what judging cost (JUDGE).
	CostMicroUSD int64 `json:"costMicroUSD,omitempty"`
}

// compileCEL checks a CEL scorer's expression (at creation).
func compileCEL(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(cel.Variable("baseline", cel.DynType), cel.Variable("candidate", cel.DynType))
	if err != nil {
		return nil, err
	}
	ast, iss := env.Compile(expr)
	if iss != nil && iss.Err() != nil {
		return nil, iss.Err()
	}
	return env.Program(ast)
}

// score runs one scorer.
func (sc Scorer) score(baseline, candidate any) Score {
	s := Score{Kind: sc.Kind}
	switch sc.Kind {
	case ScorerExact:
		s.Pass = reflect.DeepEqual(baseline, candidate)
	case ScorerJSONFields:
		s.Pass = reflect.DeepEqual(without(baseline, sc.IgnorePaths, ""), without(candidate, sc.IgnorePaths, ""))
	case ScorerNumeric:
		b, c := at(baseline, sc.Path), at(candidate, sc.Path)
		s.Pass = numbersClose(b, c, sc.Tolerance, sc.Relative)
	case ScorerCEL:
		prg, err := compileCEL(sc.Expression)
		if err != nil {
			s.Message = err.Error()
			return s
		}
		out, _, err := prg.Eval(map[string]any{"baseline": celValue(baseline), "candidate": celValue(candidate)})
		if err != nil {
			s.Message = err.Error()
			return s
		}
		switch v := out.Value().(type) {
		case bool:
			s.Pass = v
		case int64:
			s.Value, s.Pass = float64(v), v >= 0
		case uint64:
			s.Value, s.Pass = float64(v), true
		case float64:
			s.Value, s.Pass = v, v >= 0
		default:
			s.Message = fmt.Sprintf("the expression returned %T, want a bool or a number", v)
		}
	}
	if s.Pass && s.Value == 0 && sc.Kind != ScorerCEL {
		s.Value = 0
	}
	return s
}

// verdictOf turns scores into a verdict: a scorer that could not judge
// makes it ERROR; a failing scorer regresses; a CEL number above zero or a
// JUDGE preferring the candidate, with no scorer failing, improves.
func verdictOf(scores []Score) string {
	for _, s := range scores {
		if s.Error {
			return VerdictError
		}
	}
	improved := false
	for _, s := range scores {
		if !s.Pass {
			return VerdictRegressed
		}
		if s.Value > 0 {
			improved = true
		}
	}
	if improved {
		return VerdictImproved
	}
	return VerdictUnchanged
}

// without drops the dotted paths from v (a copy).
func without(v any, paths []string, prefix string) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			if slices.Contains(paths, p) {
				continue
			}
			out[k] = without(val, paths, p)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = without(val, paths, prefix+"."+strconv.Itoa(i))
		}
		return out
	}
	return v
}

// at reads a dotted path of v ("" is v).
func at(v any, path string) any {
	if path == "" {
		return v
	}
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case int64:
		return float64(x), true
	case int:
		return float64(x), true
	}
	return 0, false
}

// numbersClose compares numbers (or objects and arrays of them, leaf by
// leaf) within tolerance; other leaves must be equal.
func numbersClose(b, c any, tol float64, relative bool) bool {
	if bn, ok := number(b); ok {
		cn, ok := number(c)
		if !ok {
			return false
		}
		d := math.Abs(bn - cn)
		if relative {
			return d <= tol*math.Max(math.Abs(bn), math.Abs(cn))
		}
		return d <= tol
	}
	switch x := b.(type) {
	case map[string]any:
		y, ok := c.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			if !numbersClose(v, y[k], tol, relative) {
				return false
			}
		}
		return true
	case []any:
		y, ok := c.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !numbersClose(x[i], y[i], tol, relative) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(b, c)
}

// celValue turns integral JSON numbers into int64 so that CEL arithmetic
// with integer literals works.
func celValue(v any) any {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
		return x
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, val := range x {
			out[k] = celValue(val)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, val := range x {
			out[i] = celValue(val)
		}
		return out
	}
	return v
}

// diff lists the operations (RFC 6902 names: add, remove, replace) that
// turn a into b, with JSON pointer paths.
func diff(a, b any, path string, out []map[string]any) []map[string]any {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		keys := make([]string, 0, len(am)+len(bm))
		for k := range am {
			keys = append(keys, k)
		}
		for k := range bm {
			if _, ok := am[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
			av, ina := am[k]
			bv, inb := bm[k]
			switch {
			case !inb:
				out = append(out, map[string]any{"op": "remove", "path": p, "from": av})
			case !ina:
				out = append(out, map[string]any{"op": "add", "path": p, "value": bv})
			default:
				out = diff(av, bv, p, out)
			}
		}
		return out
	}
	as, aok := a.([]any)
	bs, bok := b.([]any)
	if aok && bok && len(as) == len(bs) {
		for i := range as {
			out = diff(as[i], bs[i], path+"/"+strconv.Itoa(i), out)
		}
		return out
	}
	if !reflect.DeepEqual(a, b) {
		out = append(out, map[string]any{"op": "replace", "path": path, "from": a, "value": b})
	}
	return out
}
