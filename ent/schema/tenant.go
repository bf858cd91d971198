package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"

	"github.com/sluicehq/sluice/internal/ids"
)

// Tenant is one customer organisation; every other table hangs off it.
type Tenant struct{ ent.Schema }

func (Tenant) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Tenant}, TimeMixin{}}
}

func (Tenant) Fields() []ent.Field {
	return []ent.Field{
		field.String("slug").Unique().NotEmpty().MaxLen(63).Immutable(),
		field.String("name").NotEmpty().MaxLen(200),
		field.Int("retention_days").Default(90).Positive(),
		field.Int64("monthly_budget_micro_usd").Optional().Nillable().
			Comment("Tenant-wide monthly spending cap on model calls; nil means none.").
			Annotations(entgql.Skip(entgql.SkipAll)), // exposed as monthlyBudgetMicroUSD/USD in schema.graphql
		field.JSON("sla_defaults", map[string]any{}).Optional().
			Annotations(entgql.Type("Map")),
		field.Bytes("data_key").Sensitive().
			Comment("The tenant's data key, wrapped by the master key named in master_key_id.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("master_key_id").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("webhooks_version").Default(0).
			Comment("Bumped with every change to the tenant's webhook endpoints (a hook in internal/store), so that caches of the endpoint list know when they are stale.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("sla_version").Default(0).
			Comment("Bumped with every change to the tenant's SLA policies (a hook of the policy schema), so that caches of the policies know when they are stale.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("open_evaluations").Default(0).
			Comment("Evaluations queued or running (internal/evals): the evaluation driver visits only tenants with some, through sluice_evaluating_tenant_ids().").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("dispatch_weight").Default(1).Range(1, 100).
			Comment("The tenant's weight in fair dispatch (plan.weight in the manifest): its share of the step queue is the configured share times the weight.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("max_concurrent_steps").Optional().Nillable().Range(1, 100000).
			Comment("At most this many of the tenant's steps run at once (plan.maxConcurrentSteps); nil means no cap.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("max_concurrent_runs").Optional().Nillable().Range(1, 100000).
			Comment("At most this many of the tenant's runs are unfinished and not waiting for a limit at once (plan.maxConcurrentRuns, internal/runs/runcap.go); nil means no cap.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("open_bulk_operations").Default(0).
			Comment("Bulk operations queued or running (internal/bulk): the bulk processor visits only tenants with some, through sluice_bulk_tenant_ids().").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("schedules").Default(0).
			Comment("Schedules that exist (internal/schedules): the schedule ticker visits only tenants with some, through sluice_scheduling_tenant_ids().").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("open_exports").Default(0).
			Comment("Exports queued or running (internal/export): the export driver visits only tenants with some, through sluice_exporting_tenant_ids().").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (Tenant) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
