package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// WorkflowPause is a workflow paused in one environment (internal/pause):
// while the row exists no step of the workflow's runs there is claimed or
// dispatched, and new runs queue (QUEUE) or are refused (REJECT). It is
// per workflow and environment, not per deployment, so deploying a new
// version keeps it. Resuming deletes it.
type WorkflowPause struct{ ent.Schema }

func (WorkflowPause) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WorkflowPause}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (WorkflowPause) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.Enum("mode").NamedValues("Queue", "QUEUE", "Reject", "REJECT"),
		field.String("reason").Default("").MaxLen(2000),
		field.String("paused_by").
			Comment("The subject that paused it last (pausing again updates it)."),
	}
}

func (WorkflowPause) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "workflow_id", "environment_id").Unique()}
}

func (WorkflowPause) Annotations() []schema.Annotation {
	// Typed by hand in graph/pause.graphql (WorkflowPause is not a Node).
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
