package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// Schedule starts runs of a workflow in an environment at the slots of a
// cron expression or a fixed interval (internal/schedules). next_slot_at
// and next_fire_at are the ticker's durable position: the next slot and
// when it is due (the slot plus its jitter).
type Schedule struct{ ent.Schema }

func (Schedule) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Schedule}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Schedule) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.String("cron").Optional().Nillable(),
		field.String("every").Optional().Nillable().
			Comment("A Go duration (at least 1s): slots at the Unix epoch plus offset plus multiples of it."),
		field.String("offset").Optional().Nillable(),
		field.String("timezone").Default("UTC"),
		field.JSON("input", map[string]any{}).Optional().Annotations(entgql.Type("Map")),
		field.Enum("overlap").NamedValues("Skip", "SKIP", "BufferOne", "BUFFER_ONE", "AllowAll", "ALLOW_ALL", "CancelOther", "CANCEL_OTHER").
			Default("SKIP").Annotations(entgql.Type("ScheduleOverlap")),
		field.Int64("catchup_window_ms").Default(3600000).Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int64("jitter_ms").Default(0).Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("start_at").Optional().Nillable(),
		field.Time("end_at").Optional().Nillable(),
		field.Bool("paused").Default(false),
		field.String("note").Optional().Nillable(),
		field.Time("next_slot_at").Optional().Nillable().
			Comment("The next slot not yet acted on; null once the schedule has ended."),
		field.Time("next_fire_at").Optional().Nillable().
			Comment("next_slot_at plus its jitter: when the ticker acts on it."),
		field.Time("buffered_slot_at").Optional().Nillable().
			Comment("BUFFER_ONE: the slot waiting for the schedule's unfinished run to end.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("created_by").Immutable(),
	}
}

func (Schedule) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "created_at"),
		// The ticker reads the due schedules of a tenant through this.
		index.Fields("tenant_id", "next_fire_at").Annotations(entsql.IndexWhere("next_fire_at IS NOT NULL AND NOT paused")).StorageKey("schedule_due"),
	}
}

func (Schedule) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}

// ScheduleAction is what a schedule did with one slot (or a trigger, or a
// backfilled slot): the run it started, or why it started none.
type ScheduleAction struct{ ent.Schema }

func (ScheduleAction) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ScheduleAction}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (ScheduleAction) Fields() []ent.Field {
	return []ent.Field{
		field.String("schedule_id").Immutable(),
		field.String("environment_id").Immutable(),
		field.Enum("source").NamedValues("Slot", "SLOT", "Trigger", "TRIGGER", "Backfill", "BACKFILL").
			Annotations(entgql.Type("ScheduleActionSource")),
		field.Enum("outcome").NamedValues("Started", "STARTED", "SkippedOverlap", "SKIPPED_OVERLAP", "Buffered", "BUFFERED",
			"Missed", "MISSED", "Failed", "FAILED").Annotations(entgql.Type("ScheduleActionOutcome")),
		field.Time("scheduled_at").Immutable().Comment("The slot (for a trigger, when it was asked)."),
		field.Time("acted_at").Comment("When the outcome was recorded."),
		field.String("run_id").Optional().Nillable(),
		field.String("message").Optional().Nillable(),
		field.Bool("run_open").Default(false).
			Comment("The run may be unfinished: overlap checks read these rows only.").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (ScheduleAction) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "schedule_id", "created_at"),
		index.Fields("tenant_id", "schedule_id").Annotations(entsql.IndexWhere("run_open")).StorageKey("schedule_action_open"),
	}
}

func (ScheduleAction) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}
