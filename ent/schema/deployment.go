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

// Deployment records that a published version went live in an environment.
// The active row per (workflow, environment) is what new runs use; inactive
// rows are the history.
type Deployment struct{ ent.Schema }

func (Deployment) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Deployment}, TenantMixin{}, CreatedMixin{}}
}

func (Deployment) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("version_id").Immutable(),
		field.String("previous_version_id").Optional().Nillable().Immutable(),
		field.Bool("active").Default(true),
		field.String("deployed_by").Immutable(),
		field.Time("superseded_at").Optional().Nillable(),
	}
}

func (Deployment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("workflow", Workflow.Type).Field("workflow_id").Unique().Required().Immutable(),
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Required().Immutable(),
		edge.To("version", WorkflowVersion.Type).Field("version_id").Unique().Required().Immutable(),
	}
}

func (Deployment) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "workflow_id", "environment_id").Unique().
			Annotations(entsql.IndexWhere("active")),
	}
}

func (Deployment) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}
