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

// Credential is a named secret in an environment, used by steps. Its value
// lives encrypted in CredentialVersion and never leaves through the API.
type Credential struct{ ent.Schema }

func (Credential) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Credential}, TenantMixin{}, TimeMixin{}}
}

func (Credential) Fields() []ent.Field {
	return []ent.Field{
		field.String("environment_id").Immutable(),
		field.String("name").NotEmpty().MaxLen(63).
			Annotations(entgql.OrderField("NAME")),
		field.Enum("type").Values("bearer", "basic", "header", "openai", "anthropic", "oauth2", "pagerduty").Immutable().
			Annotations(entgql.Type("CredentialType")),
		field.Int("current_version").Positive(),
		field.String("fingerprint"),
		field.String("created_by").Immutable(),
		field.Time("rotated_at").Optional().Nillable(),
	}
}

func (Credential) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("environment", Environment.Type).Field("environment_id").Unique().Required().Immutable(),
		edge.From("versions", CredentialVersion.Type).Ref("credential").
			Annotations(entsql.OnDelete(entsql.Cascade), entgql.Skip(entgql.SkipAll)),
	}
}

func (Credential) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "environment_id", "name").Unique()}
}

func (Credential) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}
