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

// CredentialVersion is one encrypted value of a credential. Rotation adds a
// version; old versions stay so runs pinned to them can finish.
type CredentialVersion struct{ ent.Schema }

func (CredentialVersion) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.CredentialVersion}, TenantMixin{}, CreatedMixin{}}
}

func (CredentialVersion) Fields() []ent.Field {
	return []ent.Field{
		field.String("credential_id").Immutable(),
		field.Int("version").Immutable().Positive(),
		field.Bytes("ciphertext").Immutable().Sensitive(),
		field.String("fingerprint").Immutable(),
		field.String("created_by").Immutable(),
	}
}

func (CredentialVersion) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("credential", Credential.Type).Field("credential_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (CredentialVersion) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "credential_id", "version").Unique()}
}

func (CredentialVersion) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
