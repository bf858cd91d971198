// Package access answers, for a domain operation, whether the caller in the
// context may perform it: its roles, and the environment an API key is
// scoped to. It returns the tenant transaction's client the operation must
// use. Ent's privacy rules (internal/authz) and Row-Level Security enforce
// the same boundaries again underneath.
package access

import (
	"context"
	"strconv"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Authorize returns the viewer and its tenant client when the viewer holds
// one of roles (owner and admin hold all).
func Authorize(ctx context.Context, roles ...string) (*viewer.Viewer, *ent.Client, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, nil, errs.E(errs.Unauthenticated, "authentication required")
	}
	if !v.Has(roles...) {
		return nil, nil, errs.E(errs.Forbidden, "this operation needs one of the roles %v", roles)
	}
	c, err := store.Client(ctx)
	if err != nil {
		return nil, nil, err
	}
	return v, c, nil
}

// AuthorizeTenantWide is Authorize for tenant-wide administration (webhook
// endpoints, environments, budgets, prices, API keys), which a caller
// restricted to one environment may not do whatever its roles. The scope is
// checked first, so the answer never depends on the object named.
func AuthorizeTenantWide(ctx context.Context, roles ...string) (*viewer.Viewer, *ent.Client, error) {
	if err := RefuseEnvironmentScoped(ctx); err != nil {
		return nil, nil, err
	}
	return Authorize(ctx, roles...)
}

// RefuseEnvironmentScoped refuses a caller restricted to one environment
// (an environment-scoped API key) with FORBIDDEN; anyone else passes.
func RefuseEnvironmentScoped(ctx context.Context) error {
	v := viewer.FromContext(ctx)
	if v == nil || v.EnvironmentID == "" || v.System {
		return nil
	}
	name := v.EnvironmentID
	if c, err := store.Client(ctx); err == nil {
		if env, err := c.Environment.Get(ctx, v.EnvironmentID); err == nil {
			name = env.Name
		}
	}
	return errs.E(errs.Forbidden, "this API key is scoped to environment %s; tenant-wide administration needs an unscoped credential", strconv.Quote(name))
}

// InScope reports whether the viewer may reach objects of environmentID.
// Objects outside its scope read exactly like objects that do not exist:
// the privacy rules hide them (and environments) from such a viewer, so an
// operation finds them missing at the point it would find a missing id;
// InScope is the check under that.
func InScope(v *viewer.Viewer, environmentID string) bool {
	return v.EnvironmentID == "" || v.EnvironmentID == environmentID
}
