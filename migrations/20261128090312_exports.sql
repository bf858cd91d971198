-- +goose Up
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "open_exports" bigint NOT NULL DEFAULT 0;
-- create "exports" table
CREATE TABLE "exports" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "scope" character varying NOT NULL, "scope_id" character varying NULL, "range_from" timestamptz NOT NULL, "range_to" timestamptz NOT NULL, "include" jsonb NOT NULL, "status" character varying NOT NULL DEFAULT 'QUEUED', "attempts" bigint NOT NULL DEFAULT 0, "files" jsonb NULL, "error" character varying NULL, "created_by" character varying NOT NULL, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "expires_at" timestamptz NOT NULL, "purged_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "exports_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "export_open" to table: "exports"
CREATE INDEX "export_open" ON "exports" ("tenant_id", "status") WHERE (((status)::text = 'QUEUED'::text) OR ((status)::text = 'RUNNING'::text));
-- create index "export_tenant_id_created_at" to table: "exports"
CREATE INDEX "export_tenant_id_created_at" ON "exports" ("tenant_id", "created_at");
-- create index "export_unpurged" to table: "exports"
CREATE INDEX "export_unpurged" ON "exports" ("tenant_id", "expires_at") WHERE (purged_at IS NULL);

-- +goose Down
-- reverse: create index "export_unpurged" to table: "exports"
DROP INDEX "export_unpurged";
-- reverse: create index "export_tenant_id_created_at" to table: "exports"
DROP INDEX "export_tenant_id_created_at";
-- reverse: create index "export_open" to table: "exports"
DROP INDEX "export_open";
-- reverse: create "exports" table
DROP TABLE "exports";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "open_exports";
