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

// ApprovalRequest asks a human to approve or reject before a run goes on.
// Exactly one decision (or the timeout) settles it.
type ApprovalRequest struct{ ent.Schema }

func (ApprovalRequest) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ApprovalRequest}, TenantMixin{}, TimeMixin{}}
}

func (ApprovalRequest) Fields() []ent.Field {
	return []ent.Field{
		field.String("run_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("step_run_id").Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Enum("status").Values("pending", "approved", "rejected", "expired", "cancelled").Default("pending").
			Annotations(entgql.Type("ApprovalStatus")),
		field.String("message").Optional(),
		field.JSON("context", map[string]any{}).Optional().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.Strings("approver_roles").Optional(),
		field.Strings("approver_subjects").Optional(),
		field.Enum("on_timeout").Values("approve", "reject", "fail").Default("fail").
			Annotations(entgql.Type("ApprovalTimeoutAction")),
		field.Time("expires_at").Optional().Nillable(),
		field.String("decided_by").Optional().Nillable(),
		field.String("comment").Optional().Nillable(),
		field.Time("decided_at").Optional().Nillable(),
	}
}

func (ApprovalRequest) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (ApprovalRequest) Indexes() []ent.Index {
	return []ent.Index{
		// Not unique: a resumed run opens a new request; old ones stay in the trail.
		index.Fields("tenant_id", "step_run_id"),
		index.Fields("tenant_id", "status"),
	}
}

func (ApprovalRequest) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField("approvals")}
}
