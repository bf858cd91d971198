package definition

import (
	"fmt"
	"regexp"
	"strings"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
)

// typing type-checks one definition's expressions against the shapes of
// its input and of the outputs of the steps checked so far.
type typing struct {
	paths *pathTypes
	input *shape
	env   *cel.Env // built on first use: most of its cost is the first check
	err   error
}

func newTyping(inputSchema []byte) *typing {
	t := &typing{paths: &pathTypes{paths: map[string]*shape{}}, input: schemaShape(inputSchema)}
	if t.input != nil && t.input.kind == shapeObject {
		for name, f := range t.input.fields {
			if celIdent.MatchString(name) {
				t.paths.declare("input."+name, f)
			}
		}
	}
	return t
}

// declareOutput makes a step's output shape known to the expressions
// checked after it.
func (t *typing) declareOutput(stepID string, s *shape) {
	if celIdent.MatchString(stepID) {
		t.paths.declare("steps."+stepID+".output", s)
	}
}

// check type-checks an expression that compiles. It returns the shape of
// its result (nil when unknown) and the type errors to report, each
// saying what to write instead where it can.
func (t *typing) check(expr string) (*shape, []string) {
	if t.env == nil && t.err == nil {
		t.env, t.err = typedEnv(t.paths)
	}
	if t.err != nil {
		return nil, nil // the expression was compiled without types already
	}
	parsed, iss := t.env.Parse(expr)
	if iss.Err() != nil {
		return nil, nil
	}
	rootID := parsed.NativeRep().Expr().ID()
	checked, iss := t.env.Check(parsed)
	if iss.Err() != nil {
		var msgs []string
		for _, e := range iss.Errors() {
			if m, ok := typeErrorMessage(e, parsed, rootID); ok {
				msgs = append(msgs, m)
			}
		}
		return nil, msgs
	}
	// An expression that is one of the known paths keeps its shape, known
	// fields included (`steps.fetch.output.body`).
	if root := checked.NativeRep().Expr(); root.Kind() == celast.IdentKind {
		if root.AsIdent() == "input" {
			return t.input, nil
		}
		if s, ok := t.paths.paths[root.AsIdent()]; ok {
			return s, nil
		}
	}
	return celShape(checked.OutputType()), nil
}

var noOverload = regexp.MustCompile(`^found no matching overload for '(.+)' applied to '(.*)'$`)

// alwaysEvaluates are the operators the checker refuses for mixed types
// although they evaluate whatever the types at run time: `==`, `!=` and
// `in` compare across types (1 == 1.0 is true, 1 == 'a' false), and a
// conditional's branches may differ. Refusing them would refuse
// expressions that run.
var alwaysEvaluates = map[string]bool{"_==_": true, "_!=_": true, "@in": true, "_?_:_": true}

var binaryOps = map[string]string{
	"_+_": "+", "_-_": "-", "_*_": "*", "_/_": "/", "_%_": "%",
	"_<_": "<", "_<=_": "<=", "_>_": ">", "_>=_": ">=", "_&&_": "&&", "_||_": "||",
}

// typeErrorMessage rewrites a checker error into a message about the
// expression as written; ok is false for errors not worth refusing.
func typeErrorMessage(e *cel.Error, parsed *cel.Ast, rootID int64) (string, bool) {
	node := findExpr(parsed, e.ExprID)
	m := noOverload.FindStringSubmatch(e.Message)
	if m == nil {
		if node != nil && node.ID() != rootID {
			return fmt.Sprintf("%s (in %s)", e.Message, unparse(parsed, node)), true
		}
		return e.Message, true
	}
	fn, sig := m[1], m[2]
	if alwaysEvaluates[fn] {
		return "", false
	}
	target, args := splitSignature(sig)
	var operands []string
	if node != nil && node.Kind() == celast.CallKind {
		call := node.AsCall()
		if call.IsMemberFunction() {
			operands = append(operands, unparse(parsed, call.Target()))
		}
		for _, a := range call.Args() {
			operands = append(operands, unparse(parsed, a))
		}
	}
	where := "" // the subexpression, unless it is the whole expression
	if node != nil && node.ID() != rootID {
		where = unparse(parsed, node) + ": "
	}
	if op, ok := binaryOps[fn]; ok && len(args) == 2 {
		return where + binaryHint(op, args, operands), true
	}
	switch {
	case fn == "-_" || fn == "!_":
		return fmt.Sprintf("%s%s%s is not defined", where, strings.Trim(fn, "_"), strings.Join(args, ", ")), true
	case fn == "_[_]" && len(args) == 2:
		return fmt.Sprintf("%s%s cannot be indexed with %s: index a list with an int, a map with its key type", where, args[0], args[1]), true
	case target != "":
		return fmt.Sprintf("%s%s has no method %s(%s)", where, target, fn, strings.Join(args, ", ")), true
	}
	return fmt.Sprintf("%sno function %s takes (%s)", where, fn, strings.Join(args, ", ")), true
}

var numeric = map[string]bool{"int": true, "uint": true, "double": true}

// binaryHint explains a refused operator and says what to write instead.
func binaryHint(op string, args, operands []string) string {
	a, b := args[0], args[1]
	head := fmt.Sprintf("%s %s %s", a, op, b)
	switch {
	case numeric[a] && numeric[b]:
		// Mixed numbers: convert one side. The example converts towards
		// double when one side is a double, else towards int.
		to, from := "int", a
		if a == "double" || b == "double" {
			to = "double"
		}
		if a == to {
			from = b
		}
		msg := fmt.Sprintf("%s: convert with %s(...) or %s(...)", head, to, from)
		if len(operands) == 2 {
			l, r := operands[0], operands[1]
			if a != to {
				l = to + "(" + l + ")"
			} else {
				r = to + "(" + r + ")"
			}
			msg += fmt.Sprintf(", for example %s %s %s", l, op, r)
		}
		return msg
	case op == "+" && (a == "string" || b == "string"):
		msg := head + ": + joins two strings; convert the other side with string(...)"
		if len(operands) == 2 {
			l, r := operands[0], operands[1]
			if a != "string" {
				l = "string(" + l + ")"
			} else {
				r = "string(" + r + ")"
			}
			msg += fmt.Sprintf(", for example %s + %s", l, r)
		}
		return msg
	case op == "&&" || op == "||":
		return fmt.Sprintf("%s: %s takes two bools", head, op)
	case op == "<" || op == "<=" || op == ">" || op == ">=":
		return fmt.Sprintf("%s: %s compares two numbers, two strings, two timestamps or two durations", head, op)
	}
	return fmt.Sprintf("%s: %s takes two numbers of one type (int, uint or double)%s", head, op, plusKinds(op))
}

func plusKinds(op string) string {
	if op == "+" {
		return ", two strings, two lists, or a timestamp and a duration"
	}
	return ""
}

// splitSignature splits the checker's rendering of argument types,
// "(string, int)" or, for a method, "string.(int)".
func splitSignature(sig string) (target string, args []string) {
	if i := strings.Index(sig, ".("); i > 0 && !strings.HasPrefix(sig, "(") {
		target, sig = sig[:i], sig[i+1:]
	}
	sig = strings.TrimSuffix(strings.TrimPrefix(sig, "("), ")")
	depth, start := 0, 0
	for i, c := range sig {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				args = append(args, strings.TrimSpace(sig[start:i]))
				start = i + 1
			}
		}
	}
	if s := strings.TrimSpace(sig[start:]); s != "" {
		args = append(args, s)
	}
	return target, args
}

// findExpr finds the node with the given id.
func findExpr(a *cel.Ast, id int64) celast.Expr {
	if a == nil || id == 0 {
		return nil
	}
	var found celast.Expr
	celast.PostOrderVisit(a.NativeRep().Expr(), celast.NewExprVisitor(func(e celast.Expr) {
		if found == nil && e.ID() == id {
			found = e
		}
	}))
	return found
}

// unparse writes a node back as CEL source.
func unparse(a *cel.Ast, e celast.Expr) string {
	s, err := cel.ExprToString(e, a.NativeRep().SourceInfo())
	if err != nil {
		return "?"
	}
	return truncate(s, 120)
}
