package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// Evaluation compares a candidate (a published version, or the baseline
// version with model overrides) with the baseline on a frozen dataset of
// recorded runs, each replayed in SANDBOX mode (internal/evals).
type Evaluation struct{ ent.Schema }

func (Evaluation) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Evaluation}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Evaluation) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable().
			Comment("The environment the dataset's runs come from."),
		field.String("baseline_version_id").Immutable().
			Comment("The version the dataset's runs ran (the environment's current version at creation)."),
		field.String("candidate_version_id").Immutable(),
		field.JSON("model_overrides", []map[string]any{}).Optional().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in evaluations.graphql
		field.JSON("scorers", []map[string]any{}).Optional().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bool("recorded_only").Default(false).Immutable(),
		field.Int("concurrency").Default(4).Immutable(),
		field.Int64("budget_micro_usd").Optional().Nillable().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)), // ...MicroUSD in evaluations.graphql
		field.Enum("status").NamedValues("Queued", "QUEUED", "Running", "RUNNING", "Completed", "COMPLETED",
			"AbortedBudget", "ABORTED_BUDGET", "Cancelled", "CANCELLED", "Failed", "FAILED").Default("QUEUED").
			Annotations(entgql.Type("EvaluationStatus")),
		field.Int("total").Immutable(),
		field.Int("done").Default(0),
		field.Int64("spent_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)), // ...MicroUSD in evaluations.graphql
		field.JSON("summary", map[string]any{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("message").Optional().Nillable(),
		field.String("created_by").Immutable(),
		field.Time("finished_at").Optional().Nillable(),
	}
}

func (Evaluation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "created_at"),
		// The driver visits open evaluations only (finished_at is set when
		// one ends).
		index.Fields("tenant_id", "created_at").Annotations(entsql.IndexWhere("finished_at IS NULL")).StorageKey("evaluation_open"),
	}
}

func (Evaluation) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), // evaluations(...) is in evaluations.graphql
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}

// EvaluationExample is one source run of an evaluation's dataset and,
// once replayed, the candidate's run, both sides' measures and the verdict.
type EvaluationExample struct{ ent.Schema }

func (EvaluationExample) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.EvaluationExample}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (EvaluationExample) Fields() []ent.Field {
	return []ent.Field{
		field.String("evaluation_id").Immutable(),
		field.Int("position").Immutable(),
		field.String("source_run_id").Immutable(),
		field.String("candidate_run_id").Optional().Nillable(),
		field.Enum("status").NamedValues("Pending", "PENDING", "Running", "RUNNING", "Done", "DONE", "Skipped", "SKIPPED").Default("PENDING").
			Annotations(entgql.Type("EvaluationExampleStatus")),
		field.Enum("verdict").NamedValues("Improved", "IMPROVED", "Regressed", "REGRESSED", "Unchanged", "UNCHANGED",
			"Error", "ERROR", "Inconclusive", "INCONCLUSIVE").Optional().Nillable().
			Annotations(entgql.Type("EvaluationVerdict")),
		field.JSON("baseline_output", map[string]any{}).Optional().Annotations(entgql.Type("Map")),
		field.JSON("candidate_output", map[string]any{}).Optional().Annotations(entgql.Type("Map")),
		field.JSON("diff", []map[string]any{}).Optional().Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("scores", []map[string]any{}).Optional().Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("judgements", []map[string]any{}).Optional().
			Comment("JUDGE scorers' answers, recorded between the model call and the verdict (internal/evals/judge.go).").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("baseline_cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)), // ...MicroUSD in evaluations.graphql
		field.Int64("candidate_cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)), // ...MicroUSD in evaluations.graphql
		field.Int64("baseline_tokens").Default(0),
		field.Int64("candidate_tokens").Default(0),
		field.Int64("baseline_duration_ms").Default(0),
		field.Int64("candidate_duration_ms").Default(0),
		field.String("message").Optional().Nillable(),
	}
}

func (EvaluationExample) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "evaluation_id", "position").Unique(),
		// The retention purge keeps runs an evaluation's dataset holds.
		index.Fields("tenant_id", "source_run_id"),
	}
}

func (EvaluationExample) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}
