package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/ids"
)

// EscalationPolicy is a tenant's ordered list of levels: who is paged, and
// after how long, while an incident or an approval stays open. Escalations
// copy it when they start (Escalation.levels), so editing or deleting a
// policy never changes a running escalation.
type EscalationPolicy struct{ ent.Schema }

func (EscalationPolicy) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.EscalationPolicy}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (EscalationPolicy) Fields() []ent.Field {
	return []ent.Field{
		field.String("name").NotEmpty().MaxLen(100).
			Annotations(entgql.OrderField("NAME")),
		field.String("description").Optional().MaxLen(500),
		field.JSON("levels", []spec.Level{}).
			Annotations(entgql.Type("[EscalationLevel!]"), entgql.Skip(entgql.SkipWhereInput, entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)),
		field.Int("repeat").Default(0).
			Comment("How many more times the levels loop after the last one."),
		field.String("created_by").Immutable(),
	}
}

func (EscalationPolicy) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "name").Unique()}
}

func (EscalationPolicy) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)}
}

// Escalation is the running state of one subject's escalation (an incident
// or an approval): a snapshot of the policy's levels taken at the start,
// the level and loop to fire next and when (durable in Postgres; the queue
// only wakes it), and the record of every level reached.
type Escalation struct{ ent.Schema }

func (Escalation) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Escalation}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Escalation) Fields() []ent.Field {
	return []ent.Field{
		field.String("policy_id").Optional().Immutable().
			Comment("The policy copied at the start; it may since have been edited or deleted."),
		field.String("policy_name").Immutable(),
		field.Enum("subject_kind").Values("incident", "approval").Immutable().
			Annotations(entgql.Type("EscalationSubjectKind")),
		field.String("subject_id").Immutable(),
		field.String("run_id").Optional().Immutable(),
		field.String("dedup_key").Immutable().MaxLen(255),
		field.String("summary").Immutable(),
		field.String("severity").Immutable(),
		field.JSON("details", map[string]any{}).Optional().Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.JSON("levels", []spec.Level{}).Immutable().
			Annotations(entgql.Type("[EscalationLevel!]"), entgql.Skip(entgql.SkipWhereInput)),
		field.Int("repeat").Immutable(),
		field.Enum("status").Values("active", "acknowledged", "resolved", "exhausted").Default("active").
			Annotations(entgql.Type("EscalationStatus")),
		field.Int("level").Default(0).Comment("The level fired next (0-based)."),
		field.Int("loop").Default(0),
		field.Time("next_fire_at").Optional().Nillable(),
		field.JSON("firings", []spec.Firing{}).Optional().
			Annotations(entgql.Type("[EscalationFiring!]"), entgql.Skip(entgql.SkipWhereInput)),
		field.Time("acknowledged_at").Optional().Nillable(),
		field.String("acknowledged_by").Optional().Nillable(),
		field.Time("resolved_at").Optional().Nillable(),
		field.String("resolved_by").Optional().Nillable(),
	}
}

func (Escalation) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("pager_duty_sends", PagerDutySend.Type).Ref("escalation").
			Annotations(entgql.RelayConnection()),
	}
}

func (Escalation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "subject_kind", "subject_id").Unique(),
		index.Fields("tenant_id", "run_id").
			Annotations(entsql.IndexWhere("run_id IS NOT NULL")),
		index.Fields("tenant_id", "next_fire_at").
			Annotations(entsql.IndexWhere("next_fire_at IS NOT NULL")),
	}
}

func (Escalation) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)}
}

// PagerDutySend is one call to the PagerDuty Events API v2 (trigger,
// acknowledge or resolve), written in the transaction that decides it (an
// outbox) and sent after commit, with retries; each try is recorded.
type PagerDutySend struct{ ent.Schema }

func (PagerDutySend) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.PagerDutySend}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (PagerDutySend) Fields() []ent.Field {
	return []ent.Field{
		field.String("escalation_id").Immutable(),
		field.String("credential_id").Immutable(),
		field.Enum("action").Values("trigger", "acknowledge", "resolve").Immutable().
			Annotations(entgql.Type("PagerDutyAction")),
		field.String("dedup_key").Immutable(),
		field.JSON("payload", map[string]any{}).Optional().Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.Enum("status").Values("pending", "sent", "failed").Default("pending").
			Annotations(entgql.Type("PagerDutySendStatus")),
		field.Int("attempts").Default(0),
		field.Time("next_attempt_at").Optional().Nillable(),
		field.Int("last_status_code").Optional().Nillable(),
		field.String("last_error").Optional().Nillable(),
		field.Time("sent_at").Optional().Nillable(),
		field.JSON("attempt_list", []spec.Attempt{}).Optional().
			Annotations(entgql.Type("[PagerDutyAttempt!]"), entgql.Skip(entgql.SkipWhereInput)),
	}
}

func (PagerDutySend) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("escalation", Escalation.Type).Field("escalation_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (PagerDutySend) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "escalation_id", "created_at"),
		index.Fields("tenant_id", "next_attempt_at").
			Annotations(entsql.IndexWhere("status = 'pending'")),
	}
}

func (PagerDutySend) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput)}
}
