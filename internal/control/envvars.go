package control

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/environmentvariableversion"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/envvars"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// VariableChange is one change to an environment's variables: the ones to
// set (added or replaced) and the names to remove. It becomes one new
// variables version.
type VariableChange struct {
	Set   []envvars.Variable
	Unset []string
	// Paths name the inputs in errors: SetPath(i) for Set[i] (".name",
	// ".type", ".value" appended), UnsetPath(i) for Unset[i].
	SetPath   func(i int) string
	UnsetPath func(i int) string
}

// SetEnvironmentVariables applies a change to an environment's variables:
// the whole new set is stored as the environment's next version (older
// versions stay, immutable, for the runs that started with them) and the
// change is audited. Admins only; bad input changes nothing.
func (s *Service) SetEnvironmentVariables(ctx context.Context, environmentID string, ch VariableChange) (*ent.Environment, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if ch.SetPath == nil {
		ch.SetPath = func(i int) string { return "input.set[" + strconv.Itoa(i) + "]" }
	}
	if ch.UnsetPath == nil {
		ch.UnsetPath = func(i int) string { return "input.unset[" + strconv.Itoa(i) + "]" }
	}
	env, err := environmentForUpdate(ctx, c, environmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	current, err := EnvironmentVariables(ctx, c, env)
	if err != nil {
		return nil, err
	}
	next := make(map[string]envvars.Variable, len(current)+len(ch.Set))
	for _, x := range current {
		next[x.Name] = x
	}
	var problems []errs.Problem
	bad := func(path, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if len(ch.Set) == 0 && len(ch.Unset) == 0 {
		return nil, errs.Invalid("input", "nothing to change: give variables to set or names to unset")
	}
	seen := map[string]bool{}
	var setNames, unsetNames []string
	for i, x := range ch.Set {
		p := ch.SetPath(i)
		if !envvars.NamePattern.MatchString(x.Name) {
			bad(p+".name", "must be letters, digits and underscores, not starting with a digit, at most %d characters", envvars.MaxNameLen)
			continue
		}
		if seen[x.Name] {
			bad(p+".name", "variable %q is named twice in this change", x.Name)
			continue
		}
		seen[x.Name] = true
		val, msg := envvars.Check(x.Type, x.Value)
		if msg != "" {
			bad(p+".value", "%s", msg)
			continue
		}
		next[x.Name] = envvars.Variable{Name: x.Name, Type: x.Type, Value: val}
		setNames = append(setNames, x.Name)
	}
	for i, name := range ch.Unset {
		p := ch.UnsetPath(i)
		switch {
		case seen[name]:
			bad(p, "variable %q is both set and unset in this change", name)
		case !slices.ContainsFunc(current, func(x envvars.Variable) bool { return x.Name == name }):
			bad(p, "variable %q is not set in environment %s", name, env.Name)
		default:
			seen[name] = true
			delete(next, name)
			unsetNames = append(unsetNames, name)
		}
	}
	if len(next) > envvars.MaxVariables {
		bad("input.set", "an environment holds at most %d variables; this change makes %d", envvars.MaxVariables, len(next))
	}
	if len(problems) > 0 {
		return nil, errs.InvalidAll("the variables change is invalid", problems)
	}
	if err := checkDeployedNeeds(ctx, c, env, envvars.Sorted(next), ch); err != nil {
		return nil, err
	}
	version := env.VarsVersion + 1
	if _, err := c.EnvironmentVariableVersion.Create().
		SetEnvironmentID(env.ID).
		SetVersion(version).
		SetVariables(envvars.Sorted(next)).
		SetSetNames(setNames).
		SetUnsetNames(unsetNames).
		SetCreatedBy(v.Subject).
		Save(ctx); err != nil {
		return nil, err
	}
	env, err = env.Update().SetVarsVersion(version).Save(ctx)
	if err != nil {
		return nil, err
	}
	types := map[string]any{}
	for _, n := range setNames {
		types[n] = string(next[n].Type)
	}
	meta := map[string]any{"environment": env.Name, "version": version, "set": types, "unset": unsetNames}
	return env, audit.Record(ctx, c, "environment.variables.set", "Environment", env.ID, meta)
}

// EnvironmentVariables returns the variables of an environment's current
// version, ordered by name.
func EnvironmentVariables(ctx context.Context, c *ent.Client, env *ent.Environment) ([]envvars.Variable, error) {
	return VariablesAt(ctx, c, env.ID, env.VarsVersion)
}

// VariablesAt returns the variables of one version of an environment's
// variables; version 0 is the empty set.
func VariablesAt(ctx context.Context, c *ent.Client, environmentID string, version int64) ([]envvars.Variable, error) {
	if version == 0 {
		return nil, nil
	}
	row, err := c.EnvironmentVariableVersion.Query().
		Where(environmentvariableversion.EnvironmentID(environmentID), environmentvariableversion.Version(version)).
		Only(ctx)
	if err != nil {
		return nil, fmt.Errorf("variables version %d of %s: %w", version, environmentID, err)
	}
	return row.Variables, nil
}

// environmentForUpdate locks an environment of the viewer's scope, or
// answers NOT_FOUND at path.
func environmentForUpdate(ctx context.Context, c *ent.Client, id, path string) (*ent.Environment, error) {
	if _, err := EnvironmentByID(ctx, c, id, path); err != nil {
		return nil, err
	}
	return c.Environment.Query().Where(environment.ID(id)).ForUpdate().Only(ctx)
}

// UpdateEnvironment renames or describes an environment. Admins only.
func (s *Service) UpdateEnvironment(ctx context.Context, id string, name, description *string) (*ent.Environment, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	var problems []errs.Problem
	if name != nil && !slugPattern.MatchString(*name) {
		problems = append(problems, errs.Problem{Path: "input.name", Message: "must be lower case letters, digits and dashes, starting with a letter, at most 63 characters"})
	}
	if description != nil && len(*description) > 500 {
		problems = append(problems, errs.Problem{Path: "input.description", Message: "must be at most 500 characters"})
	}
	if len(problems) > 0 {
		return nil, errs.InvalidAll("the environment change is invalid", problems)
	}
	if name == nil && description == nil {
		return nil, errs.Invalid("input", "nothing to change: give a name or a description")
	}
	env, err := environmentForUpdate(ctx, c, id, "input.id")
	if err != nil {
		return nil, err
	}
	meta := map[string]any{}
	u := env.Update()
	if name != nil && *name != env.Name {
		meta["name"], meta["previousName"] = *name, env.Name
		u.SetName(*name)
	}
	if description != nil && *description != env.Description {
		meta["description"] = *description
		u.SetDescription(*description)
	}
	if len(meta) == 0 {
		return env, nil
	}
	env, err = u.Save(ctx)
	if ent.IsConstraintError(err) {
		return nil, &errs.Error{Code: errs.Conflict, Message: "environment " + quote(*name) + " already exists", Problems: []errs.Problem{{Path: "input.name", Message: "already exists"}}}
	}
	if err != nil {
		return nil, err
	}
	return env, audit.Record(ctx, c, "environment.update", "Environment", env.ID, meta)
}

// ArchiveEnvironment archives (or, with archived false, unarchives) an
// environment: while archived it refuses new runs and deploys; its runs,
// deployments, credentials and variables stay readable. Admins only.
func (s *Service) ArchiveEnvironment(ctx context.Context, id string, archived bool) (*ent.Environment, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	env, err := environmentForUpdate(ctx, c, id, "id")
	if err != nil {
		return nil, err
	}
	if (env.ArchivedAt != nil) == archived {
		return env, nil
	}
	action := "environment.archive"
	u := env.Update()
	if archived {
		u.SetArchivedAt(s.now())
	} else {
		action = "environment.unarchive"
		u.ClearArchivedAt()
	}
	env, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	return env, audit.Record(ctx, c, action, "Environment", env.ID, map[string]any{"environment": env.Name})
}

// ArchivedError is the error for an operation an archived environment
// refuses, at path.
func ArchivedError(env *ent.Environment, path, what string) error {
	return &errs.Error{Code: errs.Validation, Message: "environment " + env.Name + " is archived: it refuses " + what + "; unarchive it first",
		Problems: []errs.Problem{{Path: path, Message: "environment is archived"}}}
}

// checkDeployedNeeds refuses a change that would leave a version deployed in
// the environment without a variable it requires, or with one of another
// type than it declares: the deploy check, kept true afterwards.
func checkDeployedNeeds(ctx context.Context, c *ent.Client, env *ent.Environment, next []envvars.Variable, ch VariableChange) error {
	deps, err := c.Deployment.Query().
		Where(deployment.EnvironmentID(env.ID), deployment.Active(true)).
		WithVersion().All(ctx)
	if err != nil {
		return err
	}
	pathOf := func(name string) string {
		for i, x := range ch.Set {
			if x.Name == name {
				return ch.SetPath(i) + ".type"
			}
		}
		for i, n := range ch.Unset {
			if n == name {
				return ch.UnsetPath(i)
			}
		}
		return "input"
	}
	var problems []errs.Problem
	for _, d := range deps {
		wv := d.Edges.Version
		if wv == nil {
			continue
		}
		def, _, err := parseDefinition(wv.Definition)
		if err != nil || len(def.Vars) == 0 {
			continue
		}
		for _, p := range def.CheckVars(next) {
			problems = append(problems, errs.Problem{Path: pathOf(p.Name),
				Message: fmt.Sprintf("%s: version %d of workflow %s, deployed here, declares it", p.Message, wv.Number, wv.WorkflowID)})
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the change would break what is deployed in environment "+env.Name+"; deploy a version that does not need it first", problems)
	}
	return nil
}
