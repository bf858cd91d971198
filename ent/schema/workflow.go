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

// Workflow is a named automation; its behaviour lives in its versions.
type Workflow struct{ ent.Schema }

func (Workflow) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Workflow}, TenantMixin{}, TimeMixin{}}
}

func (Workflow) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(200).
			Annotations(entgql.OrderField("NAME")),
		field.String("slug").NotEmpty().MaxLen(63).Immutable(),
		field.String("description").Optional().MaxLen(2000),
		field.String("created_by").Immutable(),
	}
}

func (Workflow) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("versions", WorkflowVersion.Type).Ref("workflow").
			Annotations(entgql.RelayConnection()),
		edge.From("deployments", Deployment.Type).Ref("workflow").
			Annotations(entgql.RelayConnection()),
	}
}

func (Workflow) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "slug").Unique()}
}

func (Workflow) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField(), entgql.MultiOrder()}
}
