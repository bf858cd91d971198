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

// Run is one execution of a published workflow version in an environment.
// Postgres is its source of truth; the queue only carries wake-ups.
type Run struct{ ent.Schema }

func (Run) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Run}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Run) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("version_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.Enum("status").Values("queued", "running", "waiting", "succeeded", "failed", "cancelled").Default("queued").
			Annotations(entgql.Type("RunStatus"), entgql.OrderField("STATUS")),
		field.Int("priority").Default(3).Range(1, 5).Immutable().
			Comment("1 (first) to 5 (last): the order of the run's steps among its tenant's held steps (fair dispatch). startRun's default is 3; replays default to 5."),
		field.Enum("mode").Values("live", "sandbox").Default("live").Immutable().
			Annotations(entgql.Type("RunMode")),
		field.JSON("input", map[string]any{}).Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.String("input_hash").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("output", json.RawMessage{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("idempotency_key").Optional().Nillable().Immutable().MaxLen(255),
		field.String("replay_of").Optional().Nillable().Immutable(),
		field.String("parent_run_id").Optional().Nillable().Immutable().
			Comment("The run whose workflow step started this one (a child run); null for a run started otherwise."),
		field.String("parent_step_id").Optional().Nillable().Immutable().
			Comment("The id of the parent run's workflow step that started this run."),
		field.Int("depth").Default(1).Immutable().
			Comment("1 for a run started otherwise, its parent's depth + 1 for a child run (at most 5)."),
		field.String("error_class").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipType)),
		field.String("error_message").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("failed_step_id").Optional().Nillable(),
		field.Int64("cost_micro_usd").Default(0).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("next_seq").Default(1).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.JSON("step_counts", map[string]int{}).Optional().
			Comment("How many of the run's steps are in each status, kept with every change so that settling the run reads no step rows.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("trace_id").Optional().Immutable().
			Comment("The run's OpenTelemetry (W3C) trace id: 32 hex characters."),
		field.String("created_by").Immutable(),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
		field.Time("sla_deadline_at").Optional().Nillable().
			Comment("When the run must have finished (created_at + the effective maxDuration); null without one. Live runs only."),
		field.Time("sla_queue_deadline_at").Optional().Nillable().
			Comment("When the run's first step must have started (created_at + the effective maxQueueDelay)."),
		field.Int64("sla_max_cost_micro_usd").Optional().Nillable().
			Comment("The effective maxCostPerRun when the run started.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("env_vars_version").Default(0).Immutable().
			Comment("The environment's variables version the run started with; its resumes read the same set, its replays too.").
			Annotations(entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)),
		field.String("release_id").Optional().Nillable().Immutable().
			Comment("The release that routed the run when it started (internal/releases); null outside a release.").
			Annotations(entgql.Skip(entgql.SkipAll)), // Run.release in releases.graphql
		field.Enum("release_side").NamedValues("Stable", "STABLE", "Candidate", "CANDIDATE").Optional().Nillable().Immutable().
			Comment("The side of its release the run was routed to; it stays on that side's version (resume and replay keep it).").
			Annotations(entgql.Type("ReleaseSide"), entgql.Skip(entgql.SkipOrderField)),
		field.Time("sla_check_at").Optional().Nillable().
			Comment("When the SLA sweep must next look at the run (its earliest deadline not yet judged); null when none is left. Served by a partial index over unfinished runs.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		// Retention (internal/retention): the tombstone of a purged run and
		// its legal hold. Typed in graph/retention.graphql.
		field.Time("payload_purged_at").Optional().Nillable().
			Comment("When the run's payloads (input, output, step outputs, recorded calls, event data) were purged; the row stays as a tombstone.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("payload_purged_by").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("concurrency_key").Optional().Nillable().Immutable().MaxLen(255).
			Comment("The run's key under its definition's concurrency limit (internal/runs/concurrency.go); NULL without one.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("hold_reason").Optional().Nillable().
			Comment("A legal hold (holdRun): while set, retention purges nothing of the run.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("held_by").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("held_at").Optional().Nillable().
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (Run) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("workflow", Workflow.Type).Field("workflow_id").Unique().Required().Immutable(),
		edge.To("version", WorkflowVersion.Type).Field("version_id").Unique().Required().Immutable(),
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Required().Immutable(),
		edge.From("steps", StepRun.Type).Ref("run").
			Annotations(entgql.Skip(entgql.SkipAll)),
		edge.From("run_events", RunEvent.Type).Ref("run").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (Run) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "idempotency_key").Unique().
			Annotations(entsql.IndexWhere("idempotency_key IS NOT NULL")),
		index.Fields("tenant_id", "status", "created_at"),
		index.Fields("tenant_id", "workflow_id", "created_at"),
		index.Fields("tenant_id", "parent_run_id").
			Annotations(entsql.IndexWhere("parent_run_id IS NOT NULL")),
		// The SLA sweep: unfinished runs with a deadline to judge.
		index.Fields("tenant_id", "sla_check_at").
			Annotations(entsql.IndexWhere("sla_check_at IS NOT NULL AND (status = 'queued' OR status = 'running' OR status = 'waiting')")),
		// SLA window objectives (aggregates over runs finished in a window)
		// and the check of runs that finished before the sweep saw them.
		index.Fields("tenant_id", "finished_at").
			Annotations(entsql.IndexWhere("finished_at IS NOT NULL AND mode = 'live'")),
		// The retention purge: finished runs whose payloads are kept.
		index.Fields("tenant_id", "finished_at").StorageKey("run_retention_payload").
			Annotations(entsql.IndexWhere("finished_at IS NOT NULL AND payload_purged_at IS NULL")),
		// The retention purge's deletion of tombstones past runDays (rows
		// only the purge writes), oldest first, the scan bounded by the
		// shortest runDays of the tenant's policies.
		index.Fields("tenant_id", "finished_at").StorageKey("run_retention_tombstone").
			Annotations(entsql.IndexWhere("payload_purged_at IS NOT NULL AND finished_at IS NOT NULL")),
		// Concurrency keys: a key's unfinished runs (counted and released
		// under the key's lock).
		index.Fields("tenant_id", "workflow_id", "environment_id", "concurrency_key", "created_at").StorageKey("run_concurrency_key").
			Annotations(entsql.IndexWhere("concurrency_key IS NOT NULL AND (status = 'queued' OR status = 'running' OR status = 'waiting')")),
		// The retention purge's check that no unfinished sandbox replay
		// still reads a run (without it, each run the purge looks at scans
		// the tenant's runs).
		index.Fields("tenant_id", "replay_of").StorageKey("run_open_replay").
			Annotations(entsql.IndexWhere("replay_of IS NOT NULL AND finished_at IS NULL")),
		// Release analysis: a release's runs finished since its step began.
		index.Fields("tenant_id", "release_id", "finished_at").
			Annotations(entsql.IndexWhere("release_id IS NOT NULL")),
	}
}

func (Run) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}
