package schema

import (
	"context"
	"errors"
	"fmt"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	gen "github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/hook"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/viewer"
)

// SLAPolicy holds service-level objectives for a scope: the tenant (no
// workflow, no environment), a workflow, an environment, or a workflow in
// an environment. One policy per scope; for each objective the most
// specific policy that sets it wins (internal/sla).
type SLAPolicy struct{ ent.Schema }

func (SLAPolicy) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.SLAPolicy}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (SLAPolicy) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Optional().Nillable().Immutable(),
		field.String("environment_id").Optional().Nillable().Immutable(),
		field.String("scope_key").Immutable().
			Comment("workflow id and environment id joined by '/', empty for the tenant default: unique per tenant, nulls included.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("name").Optional().MaxLen(200),
		field.JSON("objectives", slaspec.Objectives{}).
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in sla.graphql
		field.String("created_by").Immutable(),
	}
}

// Hooks: every change to a policy bumps its tenant's sla_version in the
// same transaction, whichever code path makes it; the run state machine
// resolves new runs' deadlines from a cache kept under that version.
func (SLAPolicy) Hooks() []ent.Hook {
	return []ent.Hook{bumpSLAVersion}
}

func bumpSLAVersion(next ent.Mutator) ent.Mutator {
	return hook.SLAPolicyFunc(func(ctx context.Context, m *gen.SLAPolicyMutation) (ent.Value, error) {
		v, err := next.Mutate(ctx, m)
		if err != nil {
			return v, err
		}
		vw := viewer.FromContext(ctx)
		if vw == nil || vw.TenantID == "" {
			return nil, errors.New("SLA policy changed without a tenant in context")
		}
		// Bookkeeping only Sluice writes (see bumpWebhooksVersion).
		err = m.Client().Tenant.Update().Where(tenant.ID(vw.TenantID)).AddSLAVersion(1).
			Exec(privacy.DecisionContext(ctx, privacy.Allow))
		if err != nil {
			return nil, fmt.Errorf("bump sla version: %w", err)
		}
		return v, nil
	})
}

func (SLAPolicy) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "scope_key").Unique()}
}

func (SLAPolicy) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), entgql.QueryField("slaPolicies"), entgql.Type("SLAPolicy"),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput),
	}
}

// Incident is a breach of an objective that someone should look at: one
// open incident per key (policy, objective, scope); later breaches join it.
type Incident struct{ ent.Schema }

func (Incident) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Incident}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Incident) Fields() []ent.Field {
	return []ent.Field{
		field.String("key").Immutable().
			Comment("sha256 of policy, objective and scope, hex: the PagerDuty dedup_key."),
		field.String("policy_id").Immutable(),
		field.String("objective").Immutable(),
		field.String("workflow_id").Optional().Nillable().Immutable(),
		field.String("environment_id").Optional().Nillable().Immutable(),
		field.Bool("per_run").Immutable().
			Comment("A per-run objective's incident (resolved by hand); otherwise a window objective's (resolves by itself)."),
		field.Enum("status").NamedValues("Triggered", "TRIGGERED", "Acknowledged", "ACKNOWLEDGED", "Resolved", "RESOLVED").Default("TRIGGERED").
			Annotations(entgql.Type("IncidentStatus")),
		field.Enum("severity").NamedValues("Critical", "CRITICAL", "Error", "ERROR", "Warning", "WARNING", "Info", "INFO").
			Annotations(entgql.Type("IncidentSeverity")),
		field.Int("count").Default(1),
		field.Time("first_seen_at").Immutable(),
		field.Time("last_seen_at"),
		field.Strings("sample_run_ids").Optional().
			Annotations(entgql.Skip(entgql.SkipType)), // sampleRunIDs in sla.graphql
		field.String("escalation_policy_id").Optional().Nillable().Immutable(),
		field.JSON("details", map[string]any{}).Optional().
			Comment("The last breach's measurement (rate, runs, cost, deadline...).").
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.Int("healthy_evaluations").Default(0).
			Comment("Window incidents: evaluations in a row in which the objective held.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("acknowledged_by").Optional().Nillable(),
		field.Time("acknowledged_at").Optional().Nillable(),
		field.String("resolved_by").Optional().Nillable(),
		field.Time("resolved_at").Optional().Nillable(),
		field.String("note").Optional().Nillable().MaxLen(2000),
	}
}

func (Incident) Indexes() []ent.Index {
	return []ent.Index{
		// At most one open incident per key.
		index.Fields("tenant_id", "key").Unique().
			Annotations(entsql.IndexWhere("status <> 'RESOLVED'")),
		index.Fields("tenant_id", "status", "created_at"),
	}
}

func (Incident) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), // incidents(where:) is in sla.graphql
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}

// SLABreach is one breach of a per-run objective by one run (for
// maxApprovalWait, by one approval request of it). Its unique key makes
// recording a breach idempotent: a sweep that dies after recording it and
// before moving on never records it twice, and one that dies before commit
// recorded nothing.
type SLABreach struct{ ent.Schema }

func (SLABreach) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.SLABreach}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (SLABreach) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("objective").Immutable(),
		field.String("subject").Default("").Immutable().
			Comment("The approval request for maxApprovalWait; empty otherwise."),
		field.String("incident_id").Immutable(),
		field.String("policy_id").Immutable(),
		field.JSON("details", map[string]any{}).Optional().Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
	}
}

func (SLABreach) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "run_id", "objective", "subject").Unique()}
}

func (SLABreach) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.Type("SLABreach"),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}
