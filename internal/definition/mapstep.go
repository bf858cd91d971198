package definition

import (
	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
)

// Map steps run an inner step once per item of a list: see the README's
// "Map steps".
const (
	// MaxMapItems bounds the list a map step processes; a longer one fails
	// the step (class permanent) naming its length.
	MaxMapItems = 10_000
	// DefaultMapConcurrency is how many items of a map step are in flight
	// at once when the step does not say.
	DefaultMapConcurrency = 10
	// MaxMapConcurrency bounds concurrency (the format schema says so too).
	MaxMapConcurrency = 100
)

// Map failure policies (Step.FailurePolicy).
const (
	// MapFail (the default): the first item that fails for good fails the
	// map step and the run with the item's class; items not started yet
	// are cancelled.
	MapFail = "fail"
	// MapContinue records a failed item's error at its index in the output
	// and goes on with the others.
	MapContinue = "continue"
)

// MapConcurrency is a map step's concurrency with its default applied.
func (s *Step) MapConcurrency() int {
	if s.Concurrency <= 0 {
		return DefaultMapConcurrency
	}
	return min(s.Concurrency, MaxMapConcurrency)
}

// MapFailurePolicy is FailurePolicy with its default applied.
func (s *Step) MapFailurePolicy() string {
	if s.FailurePolicy == "" {
		return MapFail
	}
	return s.FailurePolicy
}

// HasSideEffect reports whether the step's calls have side effects: a
// side-effect step, or a map step whose inner step is one. A SANDBOX replay
// returns such a step's recorded output instead of calling.
func (s *Step) HasSideEffect() bool {
	return s.SideEffect || (s.Type == StepMap && s.Step != nil && s.Step.SideEffect)
}

// MapRunsItems reports whether a map step's items are units of work of
// their own (http and llm inner steps), rather than evaluated all at once
// in the step's claim (transform).
func (s *Step) MapRunsItems() bool {
	return s.Type == StepMap && s.Step != nil && s.Step.Type != StepTransform
}

// checkMap checks what the format schema cannot about a map step: its
// items expression and its inner step, which takes the map's id and needs
// and sees `item` and `index`.
func (v *validator) checkMap(path string, s *Step, scope exprScope) *shape {
	if s.Items != "" {
		v.checkExpr(path+".items", s.Items, scope, false)
	}
	in := s.Step
	if in == nil {
		return nil // the schema reports it as missing
	}
	ipath := path + ".step"
	if in.ID != "" {
		v.add(ipath+".id", "a map step's inner step has no id of its own: it runs as the map step %q", s.ID)
	}
	if len(in.Needs) > 0 {
		v.add(ipath+".needs", "a map step's inner step has no needs of its own: put them on the map step")
	}
	switch in.Type {
	case StepMap:
		v.add(ipath+".type", "a map step cannot contain another map step: map over a list of lists with one map and a transform, or chain two map steps")
		return nil
	case StepHTTP, StepLLM, StepTransform:
	case "":
		return nil // the schema reports it as missing
	default:
		v.add(ipath+".type", "a map step runs http, llm or transform steps, not %s", in.Type)
		return nil
	}
	if in.AtMostOnce() {
		v.add(ipath+".delivery", "delivery at_most_once is not supported inside a map step yet")
	}
	inner := scope
	inner.mapItem = true
	elem := v.checkStepBody(ipath, in, inner)
	if s.FailurePolicy == "continue" {
		elem = nil // a failed item is an error object at its index
	}
	return listOf(elem)
}

// checkMapVars refuses `item` and `index` outside a map step's inner step,
// where they are not defined (the expression environment declares them
// for every expression, so the compiler alone would accept them).
func (v *validator) checkMapVars(path, expr string, a *cel.Ast) {
	if name := mapVarRef(a.NativeRep().Expr(), map[string]bool{}); name != "" {
		v.add(path, "%s is defined only inside a map step's inner step (expression %q)", name, expr)
	}
}

// mapVarRef returns "item" or "index" when e reads that variable where no
// comprehension variable of the same name shadows it.
func mapVarRef(e celast.Expr, shadowed map[string]bool) string {
	isVar := func(name string) bool { return (name == "item" || name == "index") && !shadowed[name] }
	first := func(es ...celast.Expr) string {
		for _, x := range es {
			if n := mapVarRef(x, shadowed); n != "" {
				return n
			}
		}
		return ""
	}
	switch e.Kind() {
	case celast.IdentKind:
		if isVar(e.AsIdent()) {
			return e.AsIdent()
		}
	case celast.SelectKind:
		return first(e.AsSelect().Operand())
	case celast.CallKind:
		call := e.AsCall()
		if call.IsMemberFunction() {
			if n := first(call.Target()); n != "" {
				return n
			}
		}
		return first(call.Args()...)
	case celast.ComprehensionKind:
		comp := e.AsComprehension()
		if n := first(comp.IterRange(), comp.AccuInit()); n != "" {
			return n
		}
		inner := map[string]bool{}
		for k, b := range shadowed {
			inner[k] = b
		}
		for _, name := range []string{comp.IterVar(), comp.IterVar2(), comp.AccuVar()} {
			if name != "" {
				inner[name] = true
			}
		}
		for _, x := range []celast.Expr{comp.LoopCondition(), comp.LoopStep(), comp.Result()} {
			if n := mapVarRef(x, inner); n != "" {
				return n
			}
		}
	case celast.ListKind:
		return first(e.AsList().Elements()...)
	case celast.MapKind:
		for _, entry := range e.AsMap().Entries() {
			me := entry.AsMapEntry()
			if n := first(me.Key(), me.Value()); n != "" {
				return n
			}
		}
	case celast.StructKind:
		for _, f := range e.AsStruct().Fields() {
			if n := first(f.AsStructField().Value()); n != "" {
				return n
			}
		}
	}
	return ""
}
