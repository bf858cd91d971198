package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"

	"github.com/sluicehq/sluice/internal/ids"
)

// APIKey authenticates a machine. The token is shown once; only its SHA-256
// is stored.
type APIKey struct{ ent.Schema }

func (APIKey) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.APIKey}, TenantMixin{}, TimeMixin{}}
}

func (APIKey) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(200),
		field.String("token_prefix").Immutable().
			Comment("The first characters of the token, so users can recognise it."),
		field.String("token_hash").Unique().Immutable().Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Strings("roles"),
		field.String("environment_id").Optional().Nillable().Immutable(),
		field.String("created_by").Immutable(),
		field.Time("expires_at").Optional().Nillable(),
		field.Time("revoked_at").Optional().Nillable(),
		field.Time("last_used_at").Optional().Nillable(),
	}
}

func (APIKey) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Immutable(),
	}
}

func (APIKey) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField("apiKeys")}
}
