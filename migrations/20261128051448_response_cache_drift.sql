-- +goose Up
-- create "drift_changes" table
CREATE TABLE "drift_changes" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "version_id" character varying NOT NULL, "step_id" character varying NOT NULL, "path" character varying NOT NULL, "kind" character varying NOT NULL, "from_type" character varying NULL, "to_type" character varying NULL, "breaking" boolean NOT NULL, "first_run_id" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "drift_changes_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "driftchange_tenant_id_version_id_step_id_path_kind" to table: "drift_changes"
CREATE UNIQUE INDEX "driftchange_tenant_id_version_id_step_id_path_kind" ON "drift_changes" ("tenant_id", "version_id", "step_id", "path", "kind");
-- create index "driftchange_tenant_id_workflow_id_created_at" to table: "drift_changes"
CREATE INDEX "driftchange_tenant_id_workflow_id_created_at" ON "drift_changes" ("tenant_id", "workflow_id", "created_at");
-- create "response_cache_entries" table
CREATE TABLE "response_cache_entries" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "cache_key" character varying NOT NULL, "status" bigint NULL, "headers" jsonb NULL, "body" bytea NULL, "stored_at" timestamptz NULL, "fresh_until" timestamptz NULL, "stale_until" timestamptz NULL, "fill_token" character varying NULL, "fill_until" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "response_cache_entries_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "responsecacheentry_tenant_id_cache_key" to table: "response_cache_entries"
CREATE UNIQUE INDEX "responsecacheentry_tenant_id_cache_key" ON "response_cache_entries" ("tenant_id", "cache_key");
-- create index "responsecacheentry_tenant_id_stale_until" to table: "response_cache_entries"
CREATE INDEX "responsecacheentry_tenant_id_stale_until" ON "response_cache_entries" ("tenant_id", "stale_until");
-- create "response_shapes" table
CREATE TABLE "response_shapes" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "version_id" character varying NOT NULL, "step_id" character varying NOT NULL, "shape_hash" character varying NOT NULL, "paths" jsonb NOT NULL, "first_run_id" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "response_shapes_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "responseshape_tenant_id_version_id_step_id_shape_hash" to table: "response_shapes"
CREATE UNIQUE INDEX "responseshape_tenant_id_version_id_step_id_shape_hash" ON "response_shapes" ("tenant_id", "version_id", "step_id", "shape_hash");

-- +goose Down
-- reverse: create index "responseshape_tenant_id_version_id_step_id_shape_hash" to table: "response_shapes"
DROP INDEX "responseshape_tenant_id_version_id_step_id_shape_hash";
-- reverse: create "response_shapes" table
DROP TABLE "response_shapes";
-- reverse: create index "responsecacheentry_tenant_id_stale_until" to table: "response_cache_entries"
DROP INDEX "responsecacheentry_tenant_id_stale_until";
-- reverse: create index "responsecacheentry_tenant_id_cache_key" to table: "response_cache_entries"
DROP INDEX "responsecacheentry_tenant_id_cache_key";
-- reverse: create "response_cache_entries" table
DROP TABLE "response_cache_entries";
-- reverse: create index "driftchange_tenant_id_workflow_id_created_at" to table: "drift_changes"
DROP INDEX "driftchange_tenant_id_workflow_id_created_at";
-- reverse: create index "driftchange_tenant_id_version_id_step_id_path_kind" to table: "drift_changes"
DROP INDEX "driftchange_tenant_id_version_id_step_id_path_kind";
-- reverse: create "drift_changes" table
DROP TABLE "drift_changes";
