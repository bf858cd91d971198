package schema

import (
	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/internal/ids"
)

// ResponseShape is one shape (JSON paths and their types) that an http
// step's successful responses had under a workflow version. A new shape
// is learned once, whichever worker sees it first (internal/drift).
type ResponseShape struct{ ent.Schema }

func (ResponseShape) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.ResponseShape}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (ResponseShape) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("version_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("shape_hash").Immutable(),
		field.JSON("paths", map[string]string{}).Immutable(),
		field.String("first_run_id").Immutable(),
	}
}

func (ResponseShape) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "version_id", "step_id", "shape_hash").Unique(),
	}
}

func (ResponseShape) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}

// DriftChange is one change of a response field seen against the shapes
// learned for the step and version: added, removed, retyped or nullability,
// with the first run that saw it. driftReport lists them.
type DriftChange struct{ ent.Schema }

func (DriftChange) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.DriftChange}, TenantMixin{LedByOwnIndexes: true}, CreatedMixin{}}
}

func (DriftChange) Fields() []ent.Field {
	return []ent.Field{
		field.String("workflow_id").Immutable(),
		field.String("version_id").Immutable(),
		field.String("step_id").Immutable(),
		field.String("path").Immutable(),
		field.String("kind").Immutable().Comment("added, removed, retyped or nullability"),
		field.String("from_type").Optional().Immutable(),
		field.String("to_type").Optional().Immutable(),
		field.Bool("breaking").Immutable().
			Comment("The workflow's expressions read the field: the step failed with schema_drift."),
		field.String("first_run_id").Immutable(),
	}
}

func (DriftChange) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "version_id", "step_id", "path", "kind").Unique(),
		index.Fields("tenant_id", "workflow_id", "created_at"),
	}
}

func (DriftChange) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipAll)}
}
