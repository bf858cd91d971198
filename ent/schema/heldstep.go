package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
)

// HeldStep is a ready step that flow control keeps in Postgres instead of
// sending it to the queue (internal/runs/dispatch.go): its tenant has its
// share of steps waiting in the queue already, or all the steps its plan
// lets it run at once. While the row exists the step's ready_at is NULL, so
// neither the reconciler nor a claim runs it; a release deletes the row,
// sets ready_at and sends the step. The row's id is the step run's id.
type HeldStep struct{ ent.Schema }

func (HeldStep) Mixin() []ent.Mixin {
	return []ent.Mixin{TenantMixin{LedByOwnIndexes: true}}
}

func (HeldStep) Fields() []ent.Field {
	return []ent.Field{
		field.String("id").Immutable().NotEmpty().MaxLen(40).
			Comment("The held step run's id."),
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("workflow_id").Immutable().
			Comment("The run's workflow: releases take turns between a tenant's workflows."),
		field.Int("priority").Immutable().
			Comment("The run's priority, 1 (first) to 5 (last)."),
		field.String("reason").Immutable().
			Comment("Why it is held: tenant_share (the tenant's share of the queue is full), tenant_concurrency (its plan's maxConcurrentSteps are running), key_concurrency (its run waits for the workflow's concurrency key), tenant_runs (its run waits for the plan's maxConcurrentRuns) or named_limit (the named concurrency limit in limit_name is full)."),
		field.Time("since").Immutable(),
		field.String("limit_name").Optional().Nillable().Immutable().
			Comment("Reason named_limit: the limit the step waits for (its release is by name)."),
	}
}

func (HeldStep) Indexes() []ent.Index {
	return []ent.Index{
		// Release order inside a workflow, and the walk over a tenant's
		// workflows that have held steps.
		index.Fields("tenant_id", "workflow_id", "priority", "since"),
		index.Fields("tenant_id", "run_id"),
		// The rows fair dispatch releases (sluice_release_held): lockRunSQL's
		// "tenant has held steps" flag looks only at these, so a tenant whose
		// held rows all wait for a limit triggers no release.
		index.Fields("tenant_id").
			Annotations(entsql.IndexWhere("reason = 'tenant_share' OR reason = 'tenant_concurrency'")).
			StorageKey("heldstep_dispatchable"),
		// A named limit's release: its oldest held steps first.
		index.Fields("tenant_id", "limit_name", "priority", "since").
			Annotations(entsql.IndexWhere("limit_name IS NOT NULL")),
	}
}

func (HeldStep) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
