package definition

import (
	"fmt"
	"sort"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"

	"github.com/sluicehq/sluice/internal/envvars"
)

// VarDecl declares an environment variable a definition reads as
// env.vars.<name>: its type, whether an environment must set it (unless a
// default is given) and a default used when the environment does not.
type VarDecl struct {
	Type        envvars.Type `json:"type"`
	Required    bool         `json:"required,omitempty"`
	Default     any          `json:"default,omitempty"`
	Description string       `json:"description,omitempty"`
}

// varShape is what the checker knows of a variable of type t.
func varShape(t envvars.Type) *shape {
	switch t {
	case envvars.String:
		return stringShape
	case envvars.Number:
		return doubleShape
	case envvars.Integer:
		return intShape
	case envvars.Boolean:
		return boolShape
	}
	return nil // json: dyn
}

// checkVarDecls checks the declared defaults against their types and makes
// the declared variables known to the type checker.
func (v *validator) checkVarDecls() {
	if len(v.d.Vars) == 0 {
		return
	}
	fields := make(map[string]*shape, len(v.d.Vars))
	for _, name := range sortedVarNames(v.d.Vars) {
		decl := v.d.Vars[name]
		path := "$.vars." + name
		if !envvars.NamePattern.MatchString(name) {
			v.add(path, "variable names are letters, digits and underscores, not starting with a digit, at most %d characters", envvars.MaxNameLen)
			continue
		}
		if !decl.Type.Valid() {
			continue // the format schema reports it
		}
		if decl.Default != nil {
			if _, msg := envvars.Check(decl.Type, decl.Default); msg != "" {
				v.add(path+".default", "%s", msg)
			}
		}
		fields[name] = varShape(decl.Type)
	}
	vars := objectOf(fields)
	v.typing.paths.declare("env.vars", vars)
}

// checkEnvVarRefs refuses env.vars.<name> for a name the definition does not
// declare, when it declares any. A definition that declares none reads
// env.vars freely; a name no environment sets then fails the expression at
// run time.
func (v *validator) checkEnvVarRefs(path, expr string, a *cel.Ast) {
	if len(v.d.Vars) == 0 {
		return
	}
	for _, name := range envVarRefs(a.NativeRep().Expr()) {
		if _, ok := v.d.Vars[name]; !ok {
			v.add(path, "env.vars.%s is not declared in vars (expression %q)", name, truncate(expr, 200))
		}
	}
}

// envVarRefs lists the names read as env.vars.<name>.
func envVarRefs(root celast.Expr) []string {
	var names []string
	celast.PostOrderVisit(root, celast.NewExprVisitor(func(e celast.Expr) {
		if e.Kind() != celast.SelectKind {
			return
		}
		sel := e.AsSelect()
		op := sel.Operand()
		if op.Kind() != celast.SelectKind || op.AsSelect().FieldName() != "vars" {
			return
		}
		if id := op.AsSelect().Operand(); id.Kind() == celast.IdentKind && id.AsIdent() == "env" {
			names = append(names, sel.FieldName())
		}
	}))
	return names
}

func sortedVarNames(m map[string]VarDecl) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// VarsValue is env.vars as the expressions of a run see it: the variables
// of the environment's version the run started with, declared defaults for
// the declared ones it does not set, numbers typed by the number rule and
// by the declaration (an integer where a number is declared is a double).
func (d *Definition) VarsValue(vars []envvars.Variable) map[string]any {
	out := make(map[string]any, len(vars)+len(d.Vars))
	for _, x := range vars {
		val := normalizedCopy(x.Value)
		if x.Type == envvars.Number {
			if i, ok := val.(int64); ok {
				val = float64(i)
			}
		}
		out[x.Name] = val
	}
	for name, decl := range d.Vars {
		if _, ok := out[name]; !ok && decl.Default != nil {
			out[name] = normalizedCopy(decl.Default)
		}
		if val, ok := out[name]; ok {
			out[name] = varShape(decl.Type).coerce(val)
		}
	}
	return out
}

// VarProblem is a declared variable an environment cannot satisfy.
type VarProblem struct {
	Name, Message string
}

// CheckVars compares the declaration with an environment's variables: a
// required variable without default must be set, and a set one must have
// the declared type.
func (d *Definition) CheckVars(vars []envvars.Variable) []VarProblem {
	have := make(map[string]envvars.Variable, len(vars))
	for _, x := range vars {
		have[x.Name] = x
	}
	var out []VarProblem
	for _, name := range sortedVarNames(d.Vars) {
		decl := d.Vars[name]
		x, ok := have[name]
		switch {
		case !ok && decl.Required && decl.Default == nil:
			out = append(out, VarProblem{name, fmt.Sprintf("variable %q is required and not set in the environment", name)})
		case ok && !envvars.Accepts(decl.Type, x.Type):
			out = append(out, VarProblem{name, fmt.Sprintf("variable %q is declared %s but the environment holds a %s", name, decl.Type, x.Type)})
		}
	}
	return out
}
