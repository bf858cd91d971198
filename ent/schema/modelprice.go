package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// ModelPrice is a tenant's override of the shipped price of a model, in
// micro-USD per million tokens.
type ModelPrice struct{ ent.Schema }

func (ModelPrice) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ModelPrice}, TenantMixin{}, TimeMixin{}}
}

func (ModelPrice) Fields() []ent.Field {
	return []ent.Field{
		field.String("provider").NotEmpty(),
		field.String("model").NotEmpty(),
		field.Int64("input_micro_usd_per_mtok").NonNegative().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("output_micro_usd_per_mtok").NonNegative().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("cached_input_micro_usd_per_mtok").NonNegative().
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (ModelPrice) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "provider", "model").Unique()}
}

func (ModelPrice) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField("modelPrices")}
}
