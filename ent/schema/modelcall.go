package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// ModelCall is one priced model call: the row cost reports aggregate. It
// carries the run's workflow, version and environment so reports group
// without joins.
type ModelCall struct{ ent.Schema }

func (ModelCall) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ModelCall}, TenantMixin{}, CreatedMixin{}}
}

func (ModelCall) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("attempt_id").Immutable(),
		field.String("workflow_id").Immutable(),
		field.String("version_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("provider").Immutable(),
		field.String("model").Immutable(),
		field.Int64("input_tokens").Immutable(),
		field.Int64("output_tokens").Immutable(),
		field.Int64("cached_input_tokens").Immutable(),
		field.Int64("cost_micro_usd").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bool("priced").Immutable().
			Comment("False when the model has no price: its cost counts as zero."),
		field.Int64("latency_ms").Immutable(),
	}
}

func (ModelCall) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "created_at"),
		index.Fields("tenant_id", "run_id"),
	}
}

func (ModelCall) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput), entgql.RelayConnection(), entgql.QueryField("modelCalls")}
}
