package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// Member grants roles to a subject (a JWT sub) in a tenant. A member's token
// that carries roles gets those the member holds; one that carries none gets
// the member's (internal/auth CombineRoles, README "Members").
type Member struct{ ent.Schema }

func (Member) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Member}, TenantMixin{}, TimeMixin{}}
}

func (Member) Fields() []ent.Field {
	return []ent.Field{
		field.String("subject").NotEmpty().MaxLen(200),
		field.Strings("roles"),
	}
}

func (Member) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "subject").Unique()}
}

func (Member) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}
