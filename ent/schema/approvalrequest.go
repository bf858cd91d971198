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
	"github.com/sluicehq/sluice/internal/protectspec"
)

// ApprovalRequest asks a human to approve or reject before a run goes on
// (kind STEP: exactly one decision, or the timeout, settles it), or before
// a deploy or release into a protected environment happens (kind
// DEPLOYMENT, internal/protection: the run fields are null, enough
// approvals apply it, one rejection or the expiry ends it).
type ApprovalRequest struct{ ent.Schema }

func (ApprovalRequest) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ApprovalRequest}, TenantMixin{}, TimeMixin{}}
}

func (ApprovalRequest) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("kind").NamedValues("Step", "STEP", "Deployment", "DEPLOYMENT").Default("STEP").Immutable().
			Annotations(entgql.Type("ApprovalKind")),
		field.String("run_id").Optional().Immutable(),
		field.String("step_id").Optional().Immutable(),
		field.String("step_run_id").Optional().Immutable().
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
		// Kind DEPLOYMENT: what waits, who asked, and the votes so far.
		field.String("workflow_id").Optional().Nillable().Immutable().Annotations(entgql.Type("ID")),
		field.String("version_id").Optional().Nillable().Immutable().Annotations(entgql.Type("ID")),
		// Not environment_id: the privacy rules would scope it as an
		// environment's object for environment-scoped keys, hiding step
		// approvals (whose column would be NULL) from them.
		field.String("target_environment_id").Optional().Nillable().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)), // environmentID in protection.graphql
		field.String("release_id").Optional().Nillable().Immutable().Annotations(entgql.Type("ID")),
		field.String("requested_by").Optional().Nillable().Immutable(),
		field.Int("required_approvals").Default(0).Immutable().
			Annotations(entgql.Skip(entgql.SkipWhereInput, entgql.SkipOrderField)),
		field.JSON("approvals", []protectspec.Vote{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in protection.graphql
		field.String("deployment_id").Optional().Nillable().
			Comment("The deployment an approved deploy made.").Annotations(entgql.Type("ID")),
	}
}

func (ApprovalRequest) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("run", Run.Type).Field("run_id").Unique().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (ApprovalRequest) Indexes() []ent.Index {
	return []ent.Index{
		// Not unique: a resumed run opens a new request; old ones stay in the trail.
		index.Fields("tenant_id", "step_run_id"),
		// A run's approvals (the retention purge clears their context).
		index.Fields("tenant_id", "run_id").Annotations(entsql.IndexWhere("run_id IS NOT NULL")),
		index.Fields("tenant_id", "status"),
		// The expiry sweep of deployment requests (internal/protection).
		index.Fields("tenant_id", "expires_at").Annotations(entsql.IndexWhere("kind = 'DEPLOYMENT' AND status = 'pending'")).StorageKey("approval_deployment_pending"),
	}
}

func (ApprovalRequest) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField("approvals")}
}
