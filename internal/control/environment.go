package control

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// CreateEnvironment adds an environment to the viewer's tenant. Admins only.
func (s *Service) CreateEnvironment(ctx context.Context, name string, kind environment.Kind, description *string) (*ent.Environment, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if !slugPattern.MatchString(name) {
		return nil, errs.Invalid("input.name", "must be lower case letters, digits and dashes, starting with a letter, at most 63 characters")
	}
	if err := environment.KindValidator(kind); err != nil {
		return nil, errs.Invalid("input.kind", "must be development, staging or production")
	}
	if description != nil && len(*description) > 500 {
		return nil, errs.Invalid("input.description", "must be at most 500 characters")
	}
	env, err := c.Environment.Create().SetName(name).SetKind(kind).SetNillableDescription(description).Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "environment "+name)
	}
	return env, audit.Record(ctx, c, "environment.create", "Environment", env.ID, map[string]any{"name": name, "kind": string(kind)})
}

// EnvironmentByID loads an environment of the viewer's tenant or NOT_FOUND.
// An environment outside the viewer's scope is NOT_FOUND too, answered at
// the same point as a missing one (the privacy rules hide it already).
func EnvironmentByID(ctx context.Context, c *ent.Client, id, path string) (*ent.Environment, error) {
	env, err := c.Environment.Get(ctx, id)
	if v := viewer.FromContext(ctx); err == nil && v != nil && !access.InScope(v, env.ID) {
		err = &ent.NotFoundError{}
	}
	if ent.IsNotFound(err) {
		return nil, &errs.Error{Code: errs.NotFound, Message: "environment " + quote(id) + " not found", Problems: []errs.Problem{{Path: path, Message: "not found"}}}
	}
	return env, err
}
