package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/triggerspec"
)

// Trigger is an inbound webhook URL (/hooks/<hook id>) that starts runs of
// a workflow in an environment from another system's webhooks. The hook id
// is random and says nothing about the tenant; its signing secrets are
// sealed in the vault (internal/vault).
type Trigger struct{ ent.Schema }

func (Trigger) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Trigger}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Trigger) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("hook_id").Immutable().NotEmpty().Unique().
			Comment("The opaque, unguessable last segment of the trigger's URL.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("verification", triggerspec.Verification{}).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bytes("secret").Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("secret_version").Default(1).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bytes("previous_secret").Optional().Nillable().Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("previous_secret_expires_at").Optional().Nillable(),
		field.JSON("dedup", triggerspec.Dedup{}).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("event_filter").Optional().MaxLen(4000),
		field.JSON("input_mapping", triggerspec.InputMapping{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("rate_limit", triggerspec.RateLimit{}).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("rate_tat").Optional().Nillable().
			Comment("The rate limit's theoretical arrival time (GCRA).").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bool("enabled").Default(true),
		field.String("created_by").Immutable(),
	}
}

func (Trigger) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("deliveries", TriggerDelivery.Type).Ref("trigger").
			Annotations(entgql.RelayConnection()),
	}
}

func (Trigger) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "name").Unique()}
}

func (Trigger) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)}
}

// TriggerDelivery is one request to a trigger's URL: whether it verified
// (and why not), whether it was a duplicate or filtered out, and the run it
// started. The body and the headers (minus credentials) are kept for
// deliveries that verified.
type TriggerDelivery struct{ ent.Schema }

func (TriggerDelivery) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.TriggerDelivery}, TenantMixin{LedByOwnIndexes: true}}
}

func (TriggerDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("trigger_id").Immutable(),
		field.Time("received_at").Immutable().Default(now).
			Annotations(entgql.OrderField("RECEIVED_AT")),
		field.String("outcome").
			Comment("started, duplicate, filtered, unverified or input_rejected."),
		field.Bool("verified").Immutable(),
		field.String("reason").Optional().Nillable().
			Comment("Why it did not verify, or why no run started."),
		field.String("dedup_key").Optional().Nillable().Immutable().MaxLen(512),
		field.String("dedup_claim").Optional().Nillable().
			Comment("sha256 of the dedup key while this delivery owns it (unique per trigger); cleared once the window is over.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bool("duplicate").Default(false).Immutable(),
		field.Bool("filtered").Default(false).Immutable(),
		field.String("run_id").Optional().Nillable(),
		field.JSON("headers", map[string]string{}).Optional().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bytes("body").Optional().Nillable().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("body_bytes").Immutable(),
	}
}

func (TriggerDelivery) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("trigger", Trigger.Type).Field("trigger_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (TriggerDelivery) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "trigger_id", "received_at"),
		index.Fields("tenant_id", "trigger_id", "dedup_claim").Unique(),
	}
}

func (TriggerDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
