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
)

// RunEvent is one entry of a run's append-only history. seq orders the
// events of a run without gaps; subscriptions and webhooks use it.
type RunEvent struct{ ent.Schema }

func (RunEvent) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.RunEvent}, TenantMixin{LedByOwnIndexes: true}}
}

func (RunEvent) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.Int64("seq").Immutable(),
		field.String("type").Immutable(),
		field.String("step_id").Optional().Nillable().Immutable(),
		field.Int("attempt").Optional().Nillable().Immutable(),
		field.JSON("data", map[string]any{}).Optional().Immutable().
			Annotations(entgql.Type("Map")),
		field.Time("at").Immutable(),
	}
}

func (RunEvent) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (RunEvent) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "run_id", "seq").Unique()}
}

func (RunEvent) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
