// Package authz holds the Ent privacy rules that keep every query and
// mutation inside the viewer's tenant and role. Postgres RLS enforces the
// tenant boundary a second time underneath.
package authz

import (
	"context"

	"entgo.io/ent"
	"entgo.io/ent/entql"

	entgen "github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/viewer"
)

// FilterTenantRule restricts queries and mutations of tenant-owned tables to
// the viewer's tenant. Without a viewer nothing is visible.
func FilterTenantRule() privacy.QueryMutationRule {
	type tenantFilter interface {
		WhereTenantID(entql.StringP)
	}
	return privacy.FilterFunc(func(ctx context.Context, f privacy.Filter) error {
		v := viewer.FromContext(ctx)
		if v == nil || v.TenantID == "" {
			return privacy.Denyf("no tenant in context")
		}
		tf, ok := f.(tenantFilter)
		if !ok {
			return privacy.Denyf("type %T is not tenant-owned", f)
		}
		tf.WhereTenantID(entql.StringEQ(v.TenantID))
		if v.EnvironmentID != "" {
			scopeToEnvironment(f, v.EnvironmentID)
		}
		return privacy.Skip
	})
}

// scopeToEnvironment narrows what a caller restricted to one environment
// (an environment-scoped API key) sees: that environment, and the objects
// that belong to an environment only when they belong to it. Objects of no
// environment (workflows, versions) stay visible.
func scopeToEnvironment(f privacy.Filter, envID string) {
	type envFilter interface {
		WhereEnvironmentID(entql.StringP)
	}
	if ef, ok := f.(*entgen.EnvironmentFilter); ok {
		ef.WhereID(entql.StringEQ(envID))
		return
	}
	if ef, ok := f.(envFilter); ok {
		ef.WhereEnvironmentID(entql.StringEQ(envID))
	}
}

// FilterOwnTenantRule restricts the tenants table to the viewer's own row.
func FilterOwnTenantRule() privacy.QueryMutationRule {
	type idFilter interface {
		WhereID(entql.StringP)
	}
	return privacy.FilterFunc(func(ctx context.Context, f privacy.Filter) error {
		v := viewer.FromContext(ctx)
		if v == nil || v.TenantID == "" {
			return privacy.Denyf("no tenant in context")
		}
		tf, ok := f.(idFilter)
		if !ok {
			return privacy.Denyf("type %T has no id filter", f)
		}
		tf.WhereID(entql.StringEQ(v.TenantID))
		return privacy.Skip
	})
}

// DenyReadOnlyMutation refuses every write from a viewer that holds only the
// viewer role. Finer role checks live in the engine, per operation.
func DenyReadOnlyMutation() privacy.MutationRule {
	return privacy.MutationRuleFunc(func(ctx context.Context, _ ent.Mutation) error {
		if v := viewer.FromContext(ctx); v == nil || !v.CanWrite() {
			return privacy.Denyf("read-only viewer")
		}
		return privacy.Skip
	})
}

// AllowSystemMutation allows Sluice's own provisioning work.
func AllowSystemMutation() privacy.MutationRule {
	return privacy.MutationRuleFunc(func(ctx context.Context, _ ent.Mutation) error {
		if v := viewer.FromContext(ctx); v != nil && v.System {
			return privacy.Allow
		}
		return privacy.Skip
	})
}
