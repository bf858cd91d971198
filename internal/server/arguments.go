package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/internal/errs"
)

// argumentCheck refuses, before anything executes, an operation that:
//   - sends a NUL byte in any string (an argument, a variable, a key or
//     value nested in a Map): Postgres cannot store one in text or jsonb,
//     so it would fail late as an internal error. VALIDATION at the
//     argument's path ("input.name", "input.definition.steps[0].id");
//   - uses introspection (__schema, __type) while it is disabled:
//     FORBIDDEN. (__typename stays allowed.)
type argumentCheck struct{ introspection bool }

func (argumentCheck) ExtensionName() string                   { return "ArgumentCheck" }
func (argumentCheck) Validate(graphql.ExecutableSchema) error { return nil }

func (a argumentCheck) MutateOperationContext(_ context.Context, op *graphql.OperationContext) *gqlerror.Error {
	if op.Operation == nil {
		return nil
	}
	w := argWalker{op: op, introspection: a.introspection}
	return w.selections(op.Operation.SelectionSet, "", 0)
}

type argWalker struct {
	op            *graphql.OperationContext
	introspection bool
}

func (w argWalker) selections(set ast.SelectionSet, path string, depth int) *gqlerror.Error {
	if depth > 64 { // fragments cannot recurse after validation; a backstop
		return nil
	}
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			if err := w.field(s, path, depth); err != nil {
				return err
			}
		case *ast.InlineFragment:
			if err := w.selections(s.SelectionSet, path, depth+1); err != nil {
				return err
			}
		case *ast.FragmentSpread:
			if f := w.op.Doc.Fragments.ForName(s.Name); f != nil {
				if err := w.selections(f.SelectionSet, path, depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (w argWalker) field(f *ast.Field, parent string, depth int) *gqlerror.Error {
	if !w.introspection && (f.Name == "__schema" || f.Name == "__type") {
		return &gqlerror.Error{Message: "introspection is disabled", Path: ast.Path{ast.PathName(f.Alias)},
			Extensions: map[string]any{"code": string(errs.Forbidden)}}
	}
	path := f.Alias
	if parent != "" {
		path = parent + "." + f.Alias
	}
	for _, arg := range f.Arguments {
		if p, ok := nulIn(arg.Value, arg.Name, w.op.Variables); ok {
			return invalidArg(p, "must not contain a NUL character")
		}
	}
	return w.selections(f.SelectionSet, path, depth+1)
}

func invalidArg(path, msg string) *gqlerror.Error {
	return &gqlerror.Error{Message: path + ": " + msg, Extensions: map[string]any{
		"code": string(errs.Validation), "path": path,
		"problems": []errs.Problem{{Path: path, Message: msg}},
	}}
}

// nulIn reports the path of the first string holding a NUL byte in an
// argument's value, following variables into their JSON values.
func nulIn(v *ast.Value, path string, vars map[string]any) (string, bool) {
	if v == nil {
		return "", false
	}
	switch v.Kind {
	case ast.Variable:
		return nulInJSON(vars[v.Raw], path)
	case ast.StringValue, ast.BlockValue, ast.EnumValue:
		if strings.IndexByte(v.Raw, 0) >= 0 {
			return path, true
		}
	case ast.ListValue:
		for i, c := range v.Children {
			if p, ok := nulIn(c.Value, fmt.Sprintf("%s[%d]", path, i), vars); ok {
				return p, true
			}
		}
	case ast.ObjectValue:
		for _, c := range v.Children {
			if p, ok := nulIn(c.Value, path+"."+c.Name, vars); ok {
				return p, true
			}
		}
	}
	return "", false
}

func nulInJSON(v any, path string) (string, bool) {
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return path, true
		}
	case []any:
		for i, e := range x {
			if p, ok := nulInJSON(e, fmt.Sprintf("%s[%d]", path, i)); ok {
				return p, true
			}
		}
	case map[string]any:
		for k, e := range x {
			kp := path + "." + strings.ReplaceAll(k, "\x00", "␀")
			if strings.IndexByte(k, 0) >= 0 {
				return kp, true
			}
			if p, ok := nulInJSON(e, kp); ok {
				return p, true
			}
		}
	}
	return "", false
}
