package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/protectspec"
)

// Environment is a place a workflow version is deployed to (development,
// staging, production, or more of each kind).
type Environment struct{ ent.Schema }

func (Environment) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Environment}, TenantMixin{}, TimeMixin{}}
}

func (Environment) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(63).
			Annotations(entgql.OrderField("NAME")),
		field.Enum("kind").Values("development", "staging", "production").
			Annotations(entgql.Type("EnvironmentKind")),
		field.String("description").Default("").MaxLen(500).
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.Time("archived_at").Optional().Nillable().
			Comment("Set while archived: the environment refuses new runs and deploys."),
		field.Int64("vars_version").Default(0).
			Comment("The current variables version; 0 is the empty set. Bumped in the transaction of every change.").
			Annotations(entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)),
		field.JSON("protection", &protectspec.Protection{}).Optional().
			Comment("What deploys and releases into the environment need (internal/protection); null protects nothing.").
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in protection.graphql
	}
}

func (Environment) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("deployments", Deployment.Type).Ref("environment").
			Annotations(entgql.RelayConnection()),
		edge.From("credentials", Credential.Type).Ref("environment").
			Annotations(entgql.RelayConnection()),
		edge.From("variable_versions", EnvironmentVariableVersion.Type).Ref("environment").
			Annotations(entgql.RelayConnection(), entgql.Skip(entgql.SkipWhereInput)),
	}
}

func (Environment) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "name").Unique()}
}

func (Environment) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField(), entgql.MultiOrder()}
}
