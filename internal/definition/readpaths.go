package definition

import (
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"
)

// OutputPathsRead returns the paths of a step's output that the
// definition's expressions read by a literal chain (steps.fetch.output.body.
// items[0].name reads "body.items[].name" of fetch), sorted. A presence test
// (has(...)) or an optional select (?.) is not a read: the expression copes
// with the field's absence. Schema drift checks these paths (internal/drift).
func (d *Definition) OutputPathsRead(stepID string) []string {
	return d.outputPaths[stepID]
}

// noteOutputPaths records the output paths an expression reads.
func (d *Definition) noteOutputPaths(a *cel.Ast) {
	for id, paths := range outputPathRefs(a) {
		if d.outputPaths == nil {
			d.outputPaths = map[string][]string{}
		}
		for _, p := range paths {
			if !slices.Contains(d.outputPaths[id], p) {
				d.outputPaths[id] = append(d.outputPaths[id], p)
			}
		}
		slices.Sort(d.outputPaths[id])
	}
}

// outputPathRefs finds the longest literal chains steps.<id>.output.<...>
// in an expression: each gives the step id and the path below output, its
// list indexes written "[]".
func outputPathRefs(a *cel.Ast) map[string][]string {
	out := map[string][]string{}
	// chain flattens e into its root identifier and segments, when e is
	// only selects and literal indexes.
	var chain func(e celast.Expr) (string, []string, bool)
	chain = func(e celast.Expr) (string, []string, bool) {
		switch e.Kind() {
		case celast.IdentKind:
			return e.AsIdent(), nil, true
		case celast.SelectKind:
			sel := e.AsSelect()
			if sel.IsTestOnly() {
				return "", nil, false
			}
			root, segs, ok := chain(sel.Operand())
			return root, append(segs, sel.FieldName()), ok
		case celast.CallKind:
			call := e.AsCall()
			if call.FunctionName() != operators.Index || len(call.Args()) != 2 {
				return "", nil, false
			}
			root, segs, ok := chain(call.Args()[0])
			if !ok {
				return "", nil, false
			}
			arg := call.Args()[1]
			if arg.Kind() != celast.LiteralKind {
				return "", nil, false
			}
			switch v := arg.AsLiteral().(type) {
			case types.String:
				return root, append(segs, string(v)), true
			case types.Int, types.Uint:
				return root, append(segs, "[]"), true
			}
		}
		return "", nil, false
	}
	var walk func(e celast.Expr)
	walk = func(e celast.Expr) {
		if root, segs, ok := chain(e); ok && root == "steps" {
			if len(segs) >= 3 && segs[1] == "output" {
				out[segs[0]] = append(out[segs[0]], joinOutputPath(segs[2:]))
			}
			return
		}
		switch e.Kind() {
		case celast.SelectKind:
			walk(e.AsSelect().Operand())
		case celast.CallKind:
			call := e.AsCall()
			if call.IsMemberFunction() {
				walk(call.Target())
			}
			for _, arg := range call.Args() {
				walk(arg)
			}
		case celast.ComprehensionKind:
			comp := e.AsComprehension()
			walk(comp.IterRange())
			walk(comp.AccuInit())
			walk(comp.LoopCondition())
			walk(comp.LoopStep())
			walk(comp.Result())
		case celast.ListKind:
			for _, el := range e.AsList().Elements() {
				walk(el)
			}
		case celast.MapKind:
			for _, entry := range e.AsMap().Entries() {
				me := entry.AsMapEntry()
				walk(me.Key())
				walk(me.Value())
			}
		case celast.StructKind:
			for _, f := range e.AsStruct().Fields() {
				walk(f.AsStructField().Value())
			}
		}
	}
	walk(a.NativeRep().Expr())
	return out
}

func joinOutputPath(segs []string) string {
	var b strings.Builder
	for i, s := range segs {
		if s != "[]" && i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s)
	}
	return b.String()
}
