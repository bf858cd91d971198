package schema

import (
	"encoding/json"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// EventWait is one wait of a wait step's attempt for an outside event: what
// it waits for, until when, the hash of its callback token, and what
// resolved it. A resumed run waits again with a new one.
type EventWait struct{ ent.Schema }

func (EventWait) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.EventWait}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (EventWait) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("step_run_id").Immutable(),
		field.Int("attempt").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("event").Immutable(),
		field.String("match").Optional().Immutable(),
		field.Enum("status").Values("pending", "resolved", "expired", "cancelled").Default("pending"),
		field.Time("expires_at").Immutable(),
		field.Bool("scanned").Default(false).
			Comment("Whether the stored events that arrived before the wait began were looked at."),
		field.String("token_hash").Immutable().Sensitive().
			Comment("SHA-256 of the callback token; the token itself is never stored."),
		field.String("event_id").Optional().Nillable().
			Comment("The inbound event that resolved the wait, if an event did."),
		field.String("resolved_by").Optional().Nillable().
			Comment("event, callback or timeout."),
		field.JSON("payload", json.RawMessage{}).Optional(),
		field.Time("resolved_at").Optional().Nillable(),
	}
}

func (EventWait) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (EventWait) Indexes() []ent.Index {
	return []ent.Index{
		// sendEvent's lookup: the environment's pending waits for a name.
		index.Fields("tenant_id", "environment_id", "event").
			Annotations(entsql.IndexWhere("status = 'pending'")),
		index.Fields("tenant_id", "step_run_id"),
		index.Fields("token_hash").Unique(),
		// An event is taken at most once per run.
		index.Fields("tenant_id", "run_id", "event_id").Unique().
			Annotations(entsql.IndexWhere("event_id IS NOT NULL")),
	}
}

func (EventWait) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
