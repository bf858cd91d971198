package schema

import (
	"encoding/json"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// MapItem is one item of a map step whose inner step calls out (http):
// its own unit of work with attempts, retries, calls and cost. Items are
// not step runs: a run has one step_runs row per definition step, and the
// map step's row holds the items' output in item order once they are done.
type MapItem struct{ ent.Schema }

func (MapItem) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.MapItem}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (MapItem) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.Int("index").Immutable().
			Annotations(entgql.OrderField("INDEX")),
		field.JSON("item", json.RawMessage{}).Optional().Immutable().
			Comment("The list element, evaluated once when the map step started: each attempt sees the same item.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Enum("status").Values("queued", "running", "succeeded", "failed", "cancelled").Default("queued").
			Annotations(entgql.Type("MapItemStatus")),
		field.Int("attempts").Default(0),
		field.Int("takeovers").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)).
			Comment("How many times a silent holder's attempt was taken over; at the crash limit the item fails with class crashed."),
		field.Time("ready_at").Optional().Nillable().
			Comment("When the item's next attempt is due; unset while it waits for a slot (concurrency) or once it is done."),
		field.JSON("output", json.RawMessage{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_class").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_message").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("calls", []map[string]any{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
	}
}

func (MapItem) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "run_id", "step_id", "index").Unique(),
		// The reconciler's view of due and silent items: only items that
		// can still run have a ready_at.
		index.Fields("tenant_id", "status", "ready_at").
			Annotations(entsql.IndexWhere("ready_at IS NOT NULL")),
	}
}

func (MapItem) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput), entgql.RelayConnection()}
}
