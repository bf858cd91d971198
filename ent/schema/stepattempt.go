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

// StepAttempt is one try of a step: a span in the run's trace. Its id is the
// queue task id, so a duplicate enqueue of the same attempt is rejected.
type StepAttempt struct{ ent.Schema }

func (StepAttempt) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.StepAttempt}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (StepAttempt) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.Int("number").Immutable(),
		field.Enum("status").Values("queued", "running", "succeeded", "failed", "cancelled").Default("queued").
			Annotations(entgql.Type("AttemptStatus")),
		field.JSON("calls", []map[string]any{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_class").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_message").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("scheduled_at"),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
		// sent_at is committed just before an at_most_once step's call is
		// sent: a takeover that finds it set knows the call may have
		// reached its receiver and does not send it again.
		field.Time("sent_at").Optional().Nillable(),
	}
}

func (StepAttempt) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("step_run", StepRun.Type).Field("step_run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (StepAttempt) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "step_run_id", "number").Unique(),
		index.Fields("tenant_id", "run_id"),
	}
}

func (StepAttempt) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
