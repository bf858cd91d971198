package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// ResponseCacheEntry is one cached response of a cached http step (its
// `cache` policy), keyed by a hash of tenant, credential (id and version),
// method, URL and body; and the fill lease that makes one worker at a time
// call upstream for the key (internal/respcache).
type ResponseCacheEntry struct{ ent.Schema }

func (ResponseCacheEntry) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ResponseCacheEntry}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (ResponseCacheEntry) Fields() []ent.Field {
	return []ent.Field{
		field.String("cache_key").Immutable().NotEmpty().
			Comment("Hex SHA-256 of tenant, credential id and version, method, URL and body hash."),
		field.Int("status").Optional().Nillable(),
		field.JSON("headers", map[string][]string{}).Optional(),
		field.Bytes("body").Optional().Nillable(),
		field.Time("stored_at").Optional().Nillable(),
		field.Time("fresh_until").Optional().Nillable(),
		field.Time("stale_until").Optional().Nillable().
			Comment("After it the entry may be purged; never earlier than fresh_until."),
		field.String("fill_token").Optional().Nillable().
			Comment("The lease of the worker calling upstream for this key."),
		field.Time("fill_until").Optional().Nillable(),
	}
}

func (ResponseCacheEntry) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "cache_key").Unique(),
		index.Fields("tenant_id", "stale_until"),
	}
}

func (ResponseCacheEntry) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
