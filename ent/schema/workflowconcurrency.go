package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// WorkflowConcurrency is a workflow's concurrency setting in one
// environment (internal/concurrency, setWorkflowConcurrency): it overrides
// the definition's `concurrency` for the workflow's runs there, whatever
// version is deployed. Removing the override deletes it.
type WorkflowConcurrency struct{ ent.Schema }

func (WorkflowConcurrency) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WorkflowConcurrency}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (WorkflowConcurrency) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.Int("run_limit").Range(1, 10000).
			Comment("At most this many unfinished runs of the workflow in the environment share a key."),
		field.String("key").Default("").MaxLen(4000).
			Comment("The key, a CEL expression over input; empty: the workflow in the environment is one key."),
		field.String("on_limit").Default("queue").
			Comment("queue, cancel_in_progress or skip_new, as in a definition."),
		field.String("updated_by").
			Comment("The subject that set it last."),
	}
}

func (WorkflowConcurrency) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "workflow_id", "environment_id").Unique()}
}

func (WorkflowConcurrency) Annotations() []schema.Annotation {
	// Typed by hand in graph/concurrency.graphql.
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
