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

// StepRun is the state of one step of a run. Its output, once succeeded, is
// the snapshot later steps read and resume reuses; it is never recomputed.
type StepRun struct{ ent.Schema }

func (StepRun) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.StepRun}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (StepRun) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("type").Immutable(),
		field.Enum("status").
			Values("pending", "queued", "running", "waiting", "succeeded", "failed", "skipped", "cancelled").
			Default("pending").
			Annotations(entgql.Type("StepStatus")),
		field.Int("attempts").Default(0),
		field.String("current_attempt_id").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("ready_at").Optional().Nillable().
			Comment("When the current attempt is due; the reconciler enqueues anything past due."),
		field.JSON("output", json.RawMessage{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_class").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error_message").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
		field.String("limit_name").Optional().Nillable().
			Comment("The named concurrency limit the step runs under (its definition's `limit`), set when it is claimed; only steps with a limit have one.").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (StepRun) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.From("attempt_list", StepAttempt.Type).Ref("step_run").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (StepRun) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "run_id", "step_id").Unique(),
		// The reconciler's view of due and stale steps. Only steps that can
		// still run have a ready_at (a step's final write clears it), so a
		// finished step leaves the index and its final write adds no entry.
		index.Fields("tenant_id", "status", "ready_at").
			Annotations(entsql.IndexWhere("ready_at IS NOT NULL")),
		// A named limit's busy steps (running, or released and not yet
		// claimed), counted at each claim of a step with the limit
		// (internal/runs/limits.go). Steps without a limit never enter it.
		index.Fields("tenant_id", "limit_name").
			Annotations(entsql.IndexWhere("limit_name IS NOT NULL AND (status = 'queued' OR status = 'running')")),
		// Workflow steps waiting on a child run (they have no ready_at),
		// read by the reconciler's check for children whose end was not
		// told to their parent (dueChildStepsSQL, every sweep): without it
		// that check read every step the tenant ever ran.
		index.Fields("tenant_id").StorageKey("steprun_waiting_child").
			Annotations(entsql.IndexWhere("status = 'waiting' AND type = 'workflow'")),
	}
}

func (StepRun) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
