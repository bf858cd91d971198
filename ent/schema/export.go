package schema

import (
	"context"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/exportspec"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Export is a data export of a tenant, an environment or a workflow over a
// time range (internal/export): queued by createExport, written by a worker
// (gzipped NDJSON files and a manifest in the export store), downloadable
// through signed URLs until expires_at, when the purge deletes its files.
type Export struct{ ent.Schema }

func (Export) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.Export}, TenantMixin{LedByOwnIndexes: true}, TimeMixin{}}
}

func (Export) Fields() []ent.Field {
	return []ent.Field{
		field.Enum("scope").NamedValues("Tenant", "TENANT", "Environment", "ENVIRONMENT", "Workflow", "WORKFLOW").
			Immutable().Annotations(entgql.Type("ExportScope")),
		field.String("scope_id").Optional().Nillable().Immutable().
			Comment("The environment or workflow exported; null for TENANT."),
		field.Time("range_from").Immutable(),
		field.Time("range_to").Immutable().Comment("Exclusive."),
		field.Strings("include").Immutable().Annotations(entgql.Skip(entgql.SkipAll)),
		field.Enum("status").NamedValues("Queued", "QUEUED", "Running", "RUNNING", "Succeeded", "SUCCEEDED", "Failed", "FAILED", "Expired", "EXPIRED").
			Default("QUEUED").Annotations(entgql.Type("ExportStatus")),
		field.Int("attempts").Default(0).
			Comment("Times a worker began writing it; a worker that died mid-export leaves it RUNNING and the next one begins again."),
		field.JSON("files", []exportspec.File{}).Optional().Annotations(entgql.Skip(entgql.SkipAll)),
		field.String("error").Optional().Nillable(),
		field.String("created_by").Immutable(),
		field.Time("started_at").Optional().Nillable(),
		field.Time("finished_at").Optional().Nillable(),
		field.Time("expires_at").Comment("When its files are deleted; download URLs are refused after it."),
		field.Time("purged_at").Optional().Nillable().Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (Export) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "created_at"),
		// The driver reads the open exports of a tenant through this.
		index.Fields("tenant_id", "status").Annotations(entsql.IndexWhere("status = 'QUEUED' OR status = 'RUNNING'")).StorageKey("export_open"),
		// The purge reads the exports past their expiry through this.
		index.Fields("tenant_id", "expires_at").Annotations(entsql.IndexWhere("purged_at IS NULL")).StorageKey("export_unpurged"),
	}
}

// Policy: only admins (and owners) read exports; Sluice's own work (the
// driver and the purge) reads them as the system.
func (Export) Policy() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{privacy.QueryRuleFunc(func(ctx context.Context, _ ent.Query) error {
			v := viewer.FromContext(ctx)
			if v != nil && (v.System || v.Has(viewer.RoleAdmin)) {
				return privacy.Skip
			}
			return privacy.Denyf("exports are for admins")
		})},
	}
}

func (Export) Annotations() []schema.Annotation {
	return []schema.Annotation{
		entgql.RelayConnection(),
		entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput),
	}
}
