package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/envvars"
	"github.com/sluicehq/sluice/internal/ids"
)

// EnvironmentVariableVersion is one immutable set of an environment's
// variables: every change (set, unset, or many at once) writes the whole new
// set under the next version. A run records the version it started with and
// reads that set on every attempt, resume and replay.
type EnvironmentVariableVersion struct{ ent.Schema }

func (EnvironmentVariableVersion) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.EnvironmentVariableVersion}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (EnvironmentVariableVersion) Fields() []ent.Field {
	return []ent.Field{
		field.String("environment_id").Immutable(),
		field.Int64("version").Immutable().
			Annotations(entgql.OrderField("VERSION")),
		field.JSON("variables", []envvars.Variable{}).Immutable().
			Comment("The whole set, ordered by name.").
			Annotations(entgql.Type("[EnvironmentVariable!]"), entgql.Skip(entgql.SkipWhereInput)),
		field.Strings("set_names").Optional().Immutable().
			Comment("The names set by the change that made this version.").
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.Strings("unset_names").Optional().Immutable().
			Comment("The names removed by the change that made this version.").
			Annotations(entgql.Skip(entgql.SkipWhereInput)),
		field.String("created_by").Immutable(),
	}
}

func (EnvironmentVariableVersion) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Required().Immutable(),
	}
}

func (EnvironmentVariableVersion) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "environment_id", "version").Unique()}
}

func (EnvironmentVariableVersion) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)}
}
