package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/releasespec"
)

// Release moves the new runs of a workflow in an environment gradually from
// the version deployed there (stable) to a candidate version, step by
// step, analysed against the stable side (internal/releases). One active
// release per workflow and environment.
type Release struct{ ent.Schema }

func (Release) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Release}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Release) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("stable_version_id").Immutable(),
		field.String("candidate_version_id").Immutable(),
		field.Enum("state").NamedValues(
			"PendingApproval", "PENDING_APPROVAL", "Progressing", "PROGRESSING", "Paused", "PAUSED",
			"Promoted", "PROMOTED", "RolledBack", "ROLLED_BACK", "Aborted", "ABORTED").Default("PROGRESSING").
			Annotations(entgql.Type("ReleaseState")),
		field.JSON("steps", []releasespec.Step{}).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in releases.graphql
		field.JSON("analysis", releasespec.Analysis{}).Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in releases.graphql
		field.Int("step_index").Default(0).
			Comment("The current step (0-based)."),
		field.Int("weight_percent").Default(0).
			Comment("The candidate's share of new runs now: the current step's weight while progressing or paused, 0 once rolled back or aborted, 100 once promoted."),
		field.Time("step_started_at").
			Comment("When the current step began: the analysis window starts here."),
		field.Time("analyzed_at").Optional().Nillable(),
		field.JSON("last_analysis", releasespec.Figures{}).Optional().
			Annotations(entgql.Skip(entgql.SkipAll)), // typed in releases.graphql
		field.JSON("analyses", []releasespec.Figures{}).Optional().
			Comment("Every analysis's figures, newest last (the last 200).").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("reason").Optional().Nillable().MaxLen(2000).
			Comment("Why the release rolled back or was aborted."),
		field.String("created_by").Immutable(),
		field.String("finished_by").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
	}
}

func (Release) Indexes() []ent.Index {
	return []ent.Index{
		// One active release per workflow and environment; startRun reads it
		// through this index in the statement that reads the deployment.
		index.Fields("tenant_id", "workflow_id", "environment_id").Unique().
			Annotations(entsql.IndexWhere("state = 'PENDING_APPROVAL' OR state = 'PROGRESSING' OR state = 'PAUSED'")),
		index.Fields("tenant_id", "created_at"),
	}
}

func (Release) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(), entgql.QueryField("releases"),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput),
	}
}
