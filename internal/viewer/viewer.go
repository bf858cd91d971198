// Package viewer says who is calling: the tenant, the subject and its roles.
// It is the only place that stores that identity in a context.
package viewer

import (
	"context"
	"slices"
	"time"
)

// Role names. Ordered from most to least privileged; see Has.
const (
	RoleOwner    = "owner"
	RoleAdmin    = "admin"
	RoleEditor   = "editor"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
)

// Roles lists every role Sluice knows.
var Roles = []string{RoleOwner, RoleAdmin, RoleEditor, RoleOperator, RoleViewer}

// KnownRole reports whether r is one of Roles.
func KnownRole(r string) bool { return slices.Contains(Roles, r) }

// Viewer is the authenticated caller of one request or task.
type Viewer struct {
	TenantID string
	Subject  string
	Roles    []string
	// APIKeyID is set when the caller authenticated with an API key.
	APIKeyID string
	// EnvironmentID, when set, restricts the caller to one environment
	// (API keys scoped to an environment).
	EnvironmentID string
	// System marks Sluice's own work (worker, CLI provisioning) on behalf of a tenant.
	System bool
	// ExpiresAt is when the credential ends (a JWT's exp, an API key's
	// expiry); zero when it does not expire. Long-lived streams end then.
	ExpiresAt time.Time
}

// Has reports whether the viewer holds any of the given roles. Owner and
// admin hold every role; system viewers too.
func (v *Viewer) Has(roles ...string) bool {
	if v == nil {
		return false
	}
	if v.System {
		return true
	}
	for _, held := range v.Roles {
		if held == RoleOwner || held == RoleAdmin {
			return true
		}
		if slices.Contains(roles, held) {
			return true
		}
	}
	return false
}

// CanWrite reports whether the viewer holds any role beyond viewer.
func (v *Viewer) CanWrite() bool {
	return v.Has(RoleEditor, RoleOperator)
}

type ctxKey struct{}

// NewContext returns ctx carrying v.
func NewContext(ctx context.Context, v *Viewer) context.Context {
	return context.WithValue(ctx, ctxKey{}, v)
}

// FromContext returns the viewer in ctx, or nil.
func FromContext(ctx context.Context) *Viewer {
	v, _ := ctx.Value(ctxKey{}).(*Viewer)
	return v
}

// SystemContext returns ctx acting as Sluice itself inside one tenant.
func SystemContext(ctx context.Context, tenantID string) context.Context {
	return NewContext(ctx, &Viewer{TenantID: tenantID, Subject: "system", System: true})
}
