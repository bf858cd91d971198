package definition

import (
	"context"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
)

// explain adds to a failed evaluation's error where it failed and on which
// types of values: CEL says "no such overload", not that input.name was a
// string. The expression is evaluated again, recording each
// subexpression's value, and the deepest one that failed while its
// operands did not is named. Only failures pay for it, and the caps apply
// as to any evaluation.
func (c *compiled) explain(act map[string]any, cause error) error {
	c.trackOnce.Do(func() {
		c.tracking, _ = celEnv().Program(c.ast,
			cel.EvalOptions(cel.OptTrackState),
			cel.CostLimit(exprCostLimit),
			cel.InterruptCheckFrequency(interruptEvery),
		)
	})
	if c.tracking == nil {
		return cause
	}
	ctx, cancel := context.WithTimeout(context.Background(), EvalTimeout)
	defer cancel()
	_, det, _ := c.tracking.ContextEval(ctx, act)
	if det == nil || det.State() == nil {
		return cause
	}
	state := det.State()
	value := func(e celast.Expr) (ref.Val, bool) {
		if e.Kind() == celast.LiteralKind {
			return e.AsLiteral(), true // constants are not recorded
		}
		v, ok := state.Value(e.ID())
		if !ok || v == nil || types.IsUnknownOrError(v) {
			return nil, false
		}
		return v, true
	}
	root := c.ast.NativeRep().Expr()
	// where names the subexpression, unless it is the whole expression,
	// which the error quotes already.
	where := func(e celast.Expr) string {
		if e.ID() == root.ID() {
			return ""
		}
		return " in " + unparse(c.ast, e)
	}
	var detail string
	celast.PostOrderVisit(c.ast.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if detail != "" {
			return
		}
		if v, ok := state.Value(e.ID()); !ok || !types.IsError(v) {
			return
		}
		switch e.Kind() {
		case celast.CallKind:
			call := e.AsCall()
			var operands []celast.Expr
			if call.IsMemberFunction() {
				operands = append(operands, call.Target())
			}
			operands = append(operands, call.Args()...)
			names := make([]string, len(operands))
			for i, o := range operands {
				v, ok := value(o)
				if !ok {
					return // an operand failed: it is the one to name
				}
				names[i] = typeName(v)
			}
			detail = callSignature(call.FunctionName(), call.IsMemberFunction(), names) + where(e)
		case celast.SelectKind:
			v, ok := value(e.AsSelect().Operand())
			if !ok {
				return
			}
			detail = fmt.Sprintf("selecting a field of a %s%s", typeName(v), where(e))
		}
	}))
	if detail == "" {
		return cause
	}
	return fmt.Errorf("%w (%s)", cause, detail)
}

// typeName names a value's CEL type as expressions write it.
func typeName(v ref.Val) string {
	switch v.Type() {
	case types.MapType:
		return "map"
	case types.ListType:
		return "list"
	case types.NullType:
		return "null"
	}
	return v.Type().TypeName()
}

// callSignature renders a call with the types of its operands:
// "string * int", "-string", "size(int)", "string.startsWith(int)".
func callSignature(fn string, member bool, operands []string) string {
	if op, ok := binaryOps[fn]; ok && len(operands) == 2 {
		return operands[0] + " " + op + " " + operands[1]
	}
	switch {
	case (fn == "-_" || fn == "!_") && len(operands) == 1:
		return strings.Trim(fn, "_") + operands[0]
	case fn == "_[_]" && len(operands) == 2:
		return operands[0] + "[" + operands[1] + "]"
	case member && len(operands) > 0:
		return operands[0] + "." + fn + "(" + strings.Join(operands[1:], ", ") + ")"
	}
	return fn + "(" + strings.Join(operands, ", ") + ")"
}
