package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// WorkflowVersion holds one definition of a workflow. A draft can be replaced;
// once published it is immutable (also enforced by a database trigger).
type WorkflowVersion struct{ ent.Schema }

func (WorkflowVersion) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WorkflowVersion}, TenantMixin{}, TimeMixin{}}
}

func (WorkflowVersion) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.Int("number").Immutable().Positive().
			Annotations(entgql.OrderField("NUMBER")),
		field.Enum("status").Values("draft", "published").Default("draft").
			Annotations(entgql.Type("WorkflowVersionStatus")),
		field.Int("schema_version"),
		field.JSON("definition", map[string]any{}).
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.String("content_hash"),
		field.String("created_by").Immutable(),
		field.String("published_by").Optional().Nillable(),
		field.Time("published_at").Optional().Nillable(),
	}
}

func (WorkflowVersion) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("workflow", Workflow.Type).Field("workflow_id").Unique().Required().Immutable(),
	}
}

func (WorkflowVersion) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "workflow_id", "number").Unique()}
}

func (WorkflowVersion) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection()}
}
