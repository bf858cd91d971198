package schema

import (
	"encoding/json"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// InboundEvent is an outside event sent to an environment (sendEvent):
// wait steps of the environment's runs take it as their output. Events are
// kept; a run takes one at most once.
type InboundEvent struct{ ent.Schema }

func (InboundEvent) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.InboundEvent}, TenantMixin{LedByOwnIndexes: true}}
}

func (InboundEvent) Fields() []ent.Field {
	return []ent.Field{
		field.String("environment_id").Immutable(),
		field.String("name").Immutable().NotEmpty().MaxLen(100),
		field.String("dedupe_id").Optional().Nillable().Immutable().MaxLen(255).
			Comment("The id the sender gave: the same id again within 24 hours is a duplicate."),
		field.JSON("data", json.RawMessage{}).Optional().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("sent_by").Immutable(),
		field.Time("received_at").Immutable().Default(now).
			Annotations(entgql.OrderField("RECEIVED_AT")),
	}
}

func (InboundEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Required().Immutable(),
	}
}

func (InboundEvent) Indexes() []ent.Index {
	return []ent.Index{
		// The events a starting wait may take: by environment and name, oldest first.
		index.Fields("tenant_id", "environment_id", "name", "received_at"),
		// Duplicates within 24 hours.
		index.Fields("tenant_id", "dedupe_id", "received_at"),
		index.Fields("tenant_id", "received_at"),
	}
}

func (InboundEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), entgql.QueryField("inboundEvents"),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput),
	}
}
