// Package authz holds the Ent privacy rules that keep every query and
// mutation inside the viewer's tenant and role. Postgres RLS enforces the
// tenant boundary a second time underneath.
package authz

import (
	"context"

	"entgo.io/ent"
	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/entql"

	entgen "github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/trigger"
	"github.com/sluicehq/sluice/ent/triggerdelivery"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
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

// FilterRunChildrenRule narrows, for a caller restricted to one environment,
// the types that belong to an environment through their run (steps,
// attempts, events, approvals, event waits, SLA breaches, webhook deliveries and their attempts) to
// those of runs in that environment, and hides the audit log (tenant-wide:
// it records every environment's work). Callers of no environment (users,
// unscoped keys, the worker) pay one context lookup.
func FilterRunChildrenRule() privacy.QueryRule {
	return privacy.QueryRuleFunc(func(ctx context.Context, q ent.Query) error {
		v := viewer.FromContext(ctx)
		if v == nil || v.EnvironmentID == "" {
			return privacy.Skip
		}
		env := v.EnvironmentID
		switch q := q.(type) {
		case *entgen.StepRunQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.StepAttemptQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.MapItemQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.RunEventQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.ApprovalRequestQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.EventWaitQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.SLABreachQuery:
			q.Where(runInEnvironment("run_id", env))
		case *entgen.WebhookDeliveryQuery:
			q.Where(runInEnvironment(webhookdelivery.FieldRunID, env))
		case *entgen.WebhookAttemptQuery:
			q.Where(deliveryInEnvironment("delivery_id", env))
		case *entgen.AuditLogQuery:
			q.Where(func(s *sql.Selector) { s.Where(sql.False()) })
		case *entgen.EscalationQuery:
			// An approval's escalation belongs to its run's environment;
			// an incident's is tenant-wide, so hidden from a scoped key.
			q.Where(runInEnvironment("run_id", env))
		case *entgen.PagerDutySendQuery:
			q.Where(func(s *sql.Selector) { s.Where(sql.False()) })
		case *entgen.TriggerDeliveryQuery:
			q.Where(triggerInEnvironment(env))
		}
		return privacy.Skip
	})
}

// ScopeRunChildrenMutationRule is FilterRunChildrenRule for updates and
// deletes, and refuses writes to tenant-wide types (environments, webhook
// endpoints, model prices, API keys, members) from a caller restricted to one
// environment. The domain services refuse those operations first, with a message;
// this is the floor under it.
func ScopeRunChildrenMutationRule() privacy.MutationRule {
	return privacy.MutationRuleFunc(func(ctx context.Context, m ent.Mutation) error {
		v := viewer.FromContext(ctx)
		if v == nil || v.EnvironmentID == "" || v.System {
			return privacy.Skip
		}
		env := v.EnvironmentID
		switch m := m.(type) {
		case *entgen.StepRunMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.StepAttemptMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.MapItemMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.RunEventMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.ApprovalRequestMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.EventWaitMutation:
			m.Where(runInEnvironment("run_id", env))
		case *entgen.WebhookDeliveryMutation:
			m.Where(runInEnvironment(webhookdelivery.FieldRunID, env))
		case *entgen.WebhookAttemptMutation:
			m.Where(deliveryInEnvironment("delivery_id", env))
		case *entgen.EnvironmentMutation, *entgen.WebhookEndpointMutation, *entgen.ModelPriceMutation,
			*entgen.APIKeyMutation, *entgen.MemberMutation, *entgen.EscalationPolicyMutation:
			return privacy.Denyf("%s: tenant-wide administration needs an unscoped credential", m.Type())
		}
		return privacy.Skip
	})
}

// runInEnvironment keeps rows whose run (column col) is in environment env.
func runInEnvironment(col, env string) func(*sql.Selector) {
	return func(s *sql.Selector) {
		s.Where(sql.In(s.C(col), runsIn(s.Dialect(), env)))
	}
}

// deliveryInEnvironment keeps rows whose webhook delivery (column col) is of
// a run in environment env.
func deliveryInEnvironment(col, env string) func(*sql.Selector) {
	return func(s *sql.Selector) {
		b := sql.Dialect(s.Dialect())
		d := b.Table(webhookdelivery.Table).As("scope_deliveries")
		s.Where(sql.In(s.C(col), b.Select(d.C(webhookdelivery.FieldID)).From(d).
			Where(sql.In(d.C(webhookdelivery.FieldRunID), runsIn(s.Dialect(), env)))))
	}
}

// triggerInEnvironment keeps the trigger deliveries of triggers in
// environment env.
func triggerInEnvironment(env string) func(*sql.Selector) {
	return func(s *sql.Selector) {
		b := sql.Dialect(s.Dialect())
		t := b.Table(trigger.Table).As("scope_triggers")
		s.Where(sql.In(s.C(triggerdelivery.FieldTriggerID), b.Select(t.C(trigger.FieldID)).From(t).
			Where(sql.EQ(t.C(trigger.FieldEnvironmentID), env))))
	}
}

// runsIn selects the ids of the runs in environment env.
func runsIn(dialect, env string) *sql.Selector {
	b := sql.Dialect(dialect)
	r := b.Table(run.Table).As("scope_runs")
	return b.Select(r.C(run.FieldID)).From(r).Where(sql.EQ(r.C(run.FieldEnvironmentID), env))
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
// viewer role. Finer role checks live in the domain services, per operation.
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
