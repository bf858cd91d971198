-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "release_id" character varying NULL, ADD COLUMN "release_side" character varying NULL;
-- create index "run_tenant_id_release_id_finished_at" to table: "runs"
CREATE INDEX "run_tenant_id_release_id_finished_at" ON "runs" ("tenant_id", "release_id", "finished_at") WHERE (release_id IS NOT NULL);
-- create "releases" table
CREATE TABLE "releases" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "stable_version_id" character varying NOT NULL, "candidate_version_id" character varying NOT NULL, "state" character varying NOT NULL DEFAULT 'PROGRESSING', "steps" jsonb NOT NULL, "analysis" jsonb NOT NULL, "step_index" bigint NOT NULL DEFAULT 0, "weight_percent" bigint NOT NULL DEFAULT 0, "step_started_at" timestamptz NOT NULL, "analyzed_at" timestamptz NULL, "last_analysis" jsonb NULL, "analyses" jsonb NULL, "reason" character varying NULL, "created_by" character varying NOT NULL, "finished_by" character varying NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "releases_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "release_tenant_id_created_at" to table: "releases"
CREATE INDEX "release_tenant_id_created_at" ON "releases" ("tenant_id", "created_at");
-- create index "release_tenant_id_workflow_id_environment_id" to table: "releases"
CREATE UNIQUE INDEX "release_tenant_id_workflow_id_environment_id" ON "releases" ("tenant_id", "workflow_id", "environment_id") WHERE (((state)::text = 'PENDING_APPROVAL'::text) OR ((state)::text = 'PROGRESSING'::text) OR ((state)::text = 'PAUSED'::text));

-- +goose Down
-- reverse: create index "release_tenant_id_workflow_id_environment_id" to table: "releases"
DROP INDEX "release_tenant_id_workflow_id_environment_id";
-- reverse: create index "release_tenant_id_created_at" to table: "releases"
DROP INDEX "release_tenant_id_created_at";
-- reverse: create "releases" table
DROP TABLE "releases";
-- reverse: create index "run_tenant_id_release_id_finished_at" to table: "runs"
DROP INDEX "run_tenant_id_release_id_finished_at";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "release_side", DROP COLUMN "release_id";
