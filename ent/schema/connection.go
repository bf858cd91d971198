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

// Connection is the lifecycle of an oauth2 credential (internal/connections):
// its provider settings, status, and its current tokens sealed by the
// vault. The client id and secret stay in the credential's versions.
type Connection struct{ ent.Schema }

func (Connection) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Connection}, TenantMixin{}, TimeMixin{}}
}

func (Connection) Fields() []ent.Field {
	return []ent.Field{
		field.String("credential_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.Enum("grant").Values("authorization_code", "client_credentials"),
		field.String("provider").Optional().Comment("Preset name, when one was used."),
		field.String("auth_url").Optional(),
		field.String("token_url"),
		field.Strings("scopes").Optional(),
		field.JSON("extra_params", map[string]string{}).Optional(),
		field.Enum("status").Values("pending_authorization", "active", "degraded", "reauthorization_required", "disabled"),
		field.String("account").Optional().Nillable(),
		field.Strings("granted_scopes").Optional(),
		field.Time("expires_at").Optional().Nillable().Comment("When the current access token expires."),
		field.Time("last_refreshed_at").Optional().Nillable(),
		field.Time("next_refresh_at").Optional().Nillable().Comment("Due time of the proactive refresh (the sweep's index)."),
		field.Int("consecutive_failures").Default(0),
		field.String("last_error").Optional().Nillable(),
		field.Int("token_version").Default(0).Comment("Bumped by every token write: a refresher that finds it changed after taking the row lock knows another one refreshed."),
		field.Bytes("tokens").Optional().Sensitive().Comment("Access and refresh token, sealed under the tenant's data key."),
	}
}

func (Connection) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("credential", Credential.Type).Field("credential_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (Connection) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "credential_id").Unique(),
		index.Fields("tenant_id", "next_refresh_at"),
	}
}

func (Connection) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// OAuthState is one authorization request in flight: the hash of its
// `state` (single use, expiring), bound to its tenant and credential.
type OAuthState struct{ ent.Schema }

func (OAuthState) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.OAuthState}, TenantMixin{}, CreatedMixin{}}
}

func (OAuthState) Fields() []ent.Field {
	return []ent.Field{
		field.String("credential_id").Immutable(),
		field.String("state_hash").Immutable().Sensitive(),
		field.String("redirect_after").Immutable(),
		field.String("redirect_uri").Immutable(),
		field.String("created_by").Immutable(),
		field.Time("expires_at").Immutable(),
		field.Time("used_at").Optional().Nillable(),
	}
}

func (OAuthState) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("credential", Credential.Type).Field("credential_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (OAuthState) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "state_hash").Unique()}
}

func (OAuthState) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// CredentialWait is a step that waits for its connection to be authorized
// again: a durable row, so a lost wake-up is found by the sweep.
type CredentialWait struct{ ent.Schema }

func (CredentialWait) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.CredentialWait}, TenantMixin{}, TimeMixin{}}
}

func (CredentialWait) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("step_run_id").Immutable(),
		field.Int("attempt").Immutable(),
		field.String("credential_id").Immutable(),
		field.Enum("status").Values("waiting", "resumed", "expired", "cancelled").Default("waiting"),
		field.Time("expires_at").Immutable(),
		field.Time("resolved_at").Optional().Nillable(),
	}
}

func (CredentialWait) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (CredentialWait) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "credential_id", "status"),
		index.Fields("tenant_id", "step_run_id"),
	}
}

func (CredentialWait) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
