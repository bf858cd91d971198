package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// RetentionPolicy is how long a tenant keeps its data (internal/retention):
// one row for the tenant, and overrides for one environment or one
// workflow. A null field inherits from the level above (workflow, then
// environment, then tenant, then the defaults).
type RetentionPolicy struct{ ent.Schema }

func (RetentionPolicy) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.RetentionPolicy}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (RetentionPolicy) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("scope").NamedValues("Tenant", "TENANT", "Environment", "ENVIRONMENT", "Workflow", "WORKFLOW").Immutable(),
		field.String("target_id").Default("").Immutable().
			Comment("The environment or workflow the override is for; empty for the tenant's policy."),
		field.Int("payload_days").Optional().Nillable(),
		field.Int("run_days").Optional().Nillable(),
		field.Int("audit_days").Optional().Nillable(),
		field.Int("webhook_delivery_days").Optional().Nillable(),
		field.String("updated_by"),
	}
}

func (RetentionPolicy) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "scope", "target_id").Unique()}
}

func (RetentionPolicy) Annotations() []schema.Annotation {
	// Typed by hand in graph/retention.graphql.
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// RetentionPass is what one pass of the retention purge did in one tenant:
// when it ran and how much of each kind it purged.
type RetentionPass struct{ ent.Schema }

func (RetentionPass) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.RetentionPass}, TenantMixin{LedByOwnIndexes: true}}
}

func (RetentionPass) Fields() []ent.Field {
	return []ent.Field{
		field.Time("started_at").Immutable(),
		field.Time("finished_at").Optional().Nillable(),
		field.Int64("payload_runs").Default(0).Comment("Runs whose payloads were purged (tombstones kept)."),
		field.Int64("runs_deleted").Default(0).Comment("Runs deleted past runDays, with their steps and events."),
		field.Int64("audit_deleted").Default(0),
		field.Int64("webhook_deliveries_deleted").Default(0),
		field.Int64("payload_bytes").Default(0).Comment("Bytes of payload purged (Postgres's stored size of the values)."),
		field.Int("batches").Default(0),
		field.String("error").Optional().Nillable(),
	}
}

func (RetentionPass) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "started_at")}
}

func (RetentionPass) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
