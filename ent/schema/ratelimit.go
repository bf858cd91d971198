package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// RateLimit is a limit policy on outbound calls (internal/ratelimit): for
// one credential (by name in an environment) or for one host (a bucket per
// credential, or one for the whole tenant), at most `rate` calls per
// `period` with `burst` back to back (GCRA in Redis) and at most
// `max_concurrent` calls in flight (a Redis semaphore whose holders
// expire). A step over the limit waits for its slot without spending a
// retry attempt.
type RateLimit struct{ ent.Schema }

func (RateLimit) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.RateLimit}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (RateLimit) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("scope").NamedValues("Credential", "CREDENTIAL", "Host", "HOST").Immutable().
			Annotations(entgql.Type("RateLimitScope")),
		field.String("environment_id").Optional().Nillable().Immutable().
			Comment("CREDENTIAL scope: the credential's environment."),
		field.String("credential_name").Optional().Nillable().Immutable().
			Comment("CREDENTIAL scope: the credential's name in its environment (steps name credentials so)."),
		field.String("host").Optional().Nillable().Immutable().
			Comment("HOST scope: the host (lower case, with its port when not the scheme's default)."),
		field.Bool("across_credentials").Default(false).Immutable().
			Comment("HOST scope: one bucket for every call of the tenant to the host, whatever its credential; otherwise one per credential."),
		field.String("scope_key").Immutable().
			Comment("What the policy limits, unique per tenant: cred:<environment>/<name> or host:<host>.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("rate").Default(0).
			Comment("Calls per period; 0: no rate, only maxConcurrent."),
		field.String("period").Default("1s").
			Comment("Go duration."),
		field.Int("burst").Default(1).
			Comment("Calls that may go back to back before the rate spaces them (at least 1)."),
		field.Int("max_concurrent").Default(0).
			Comment("Calls in flight at once; 0: no cap."),
		field.String("created_by").Immutable(),
	}
}

func (RateLimit) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "scope_key").Unique()}
}

func (RateLimit) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), entgql.QueryField("rateLimits"),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput),
	}
}

// RateLimitCooldown is the durable record of a cooldown an upstream asked
// for (a 429 or 503 with Retry-After or a reset header): until `until`,
// every call in the scope waits. Redis holds a copy for the hot path; the
// cooldown restorer writes unexpired rows back into Redis after a wipe.
type RateLimitCooldown struct{ ent.Schema }

func (RateLimitCooldown) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.RateLimitCooldown}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (RateLimitCooldown) Fields() []ent.Field {
	return []ent.Field{
		field.String("scope").Immutable().
			Comment("The bucket: h:<host>, or p:<policy id>[:<environment>/<credential>]."),
		field.Time("until"),
		field.Int("status_code").Default(0),
	}
}

func (RateLimitCooldown) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "scope").Unique(), index.Fields("tenant_id", "until")}
}

func (RateLimitCooldown) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
