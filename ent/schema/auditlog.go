package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// AuditLog records one mutation: who, what, on which object, when. The app
// role may only insert and read it (see migrations).
type AuditLog struct{ ent.Schema }

func (AuditLog) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.AuditLog}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (AuditLog) Fields() []ent.Field {
	return []ent.Field{
		field.String("actor").Immutable(),
		field.String("actor_type").Immutable().Comment("user, api_key or system"),
		field.String("action").Immutable(),
		field.String("target_type").Immutable(),
		field.String("target_id").Immutable(),
		field.String("request_id").Optional().Immutable(),
		field.JSON("metadata", map[string]any{}).Optional().Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
	}
}

func (AuditLog) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "created_at")}
}

func (AuditLog) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}
