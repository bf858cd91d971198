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

// BulkOperation is one operator action (cancel, resume or replay) over a
// set of runs fixed when it was created (internal/bulk): its items are the
// runs, processed in the background by the worker at a bounded rate, each
// at most once.
type BulkOperation struct{ ent.Schema }

func (BulkOperation) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.BulkOperation}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (BulkOperation) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("action").NamedValues("Cancel", "CANCEL", "Resume", "RESUME", "Replay", "REPLAY").Immutable().
			Annotations(entgql.Type("BulkRunActionKind")),
		field.JSON("run_filter", map[string]any{}).Optional().Immutable().
			Comment("The filter the runs were chosen by, as given (null when runIDs were given).").
			Annotations(entgql.Type("Map")),
		field.JSON("options", map[string]any{}).Optional().Immutable().
			Comment("versionID, inputPatch and mode, as given.").
			Annotations(entgql.Type("Map")),
		field.Enum("status").NamedValues("Queued", "QUEUED", "Running", "RUNNING", "Completed", "COMPLETED", "Cancelled", "CANCELLED").
			Default("QUEUED").Annotations(entgql.Type("BulkOperationStatus")),
		field.Int("total").Immutable(),
		field.Int("done").Default(0),
		field.Int("succeeded").Default(0),
		field.Int("failed").Default(0),
		field.Int("skipped").Default(0),
		field.String("created_by").Immutable(),
		field.String("environment_scope").Default("").Immutable().
			Comment("The environment the creator was restricted to (an environment-scoped API key), or empty: the processor acts within it.").
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("cancelled_by").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
	}
}

func (BulkOperation) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "created_at"),
		// The processor visits open operations only.
		index.Fields("tenant_id", "created_at").Annotations(entsql.IndexWhere("finished_at IS NULL")).StorageKey("bulk_operation_open"),
	}
}

func (BulkOperation) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}

// BulkOperationItem is one run of a bulk operation and what acting on it
// did. Its status leaves PENDING once, in the transaction that acts on the
// run: a run is acted on at most once per operation.
type BulkOperationItem struct{ ent.Schema }

func (BulkOperationItem) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.BulkOperationItem}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (BulkOperationItem) Fields() []ent.Field {
	return []ent.Field{
		field.String("operation_id").Immutable(),
		field.Int("position").Immutable(),
		field.String("run_id").Immutable(),
		field.Enum("status").NamedValues("Pending", "PENDING", "Succeeded", "SUCCEEDED", "Failed", "FAILED", "Skipped", "SKIPPED").
			Default("PENDING").Annotations(entgql.Type("BulkOperationItemStatus")),
		field.String("result_run_id").Optional().Nillable().
			Comment("A replay's new run."),
		field.String("message").Optional().Nillable().
			Comment("Why the item failed or was skipped."),
		field.Int("tries").Default(0).
			Comment("Passes that failed on an unexpected error (an outage) before the item was settled."),
		field.Time("acted_at").Optional().Nillable(),
	}
}

func (BulkOperationItem) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "operation_id", "position").Unique(),
		index.Fields("tenant_id", "operation_id", "run_id").Unique(),
	}
}

func (BulkOperationItem) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}
