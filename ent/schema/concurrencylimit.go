package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// ConcurrencyLimit is a named concurrency limit of a tenant
// (internal/limits): at most max_running steps that name it in their
// definition (`limit: "crm-api"`) run at once, across every workflow and
// environment of the tenant. Steps beyond it are held at their claim
// (held_steps reason named_limit) and released as the running ones leave.
type ConcurrencyLimit struct{ ent.Schema }

func (ConcurrencyLimit) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ConcurrencyLimit}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (ConcurrencyLimit) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").Immutable().NotEmpty().MaxLen(63).
			Comment("Lower-case letters, digits, '-', '_' and '.'; unique per tenant. Steps name the limit so."),
		field.Int("max_running").Positive().
			Comment("Steps that may run under the limit at once, 1 to 10000 (GraphQL: limit)."),
		field.String("updated_by").
			Comment("The subject that set the limit last."),
	}
}

func (ConcurrencyLimit) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "name").Unique()}
}

func (ConcurrencyLimit) Annotations() []schema.Annotation {
	// Typed by hand in graph/namedlimits.graphql.
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
