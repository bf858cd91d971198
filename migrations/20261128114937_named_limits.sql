-- +goose Up
-- modify "held_steps" table
ALTER TABLE "held_steps" ADD COLUMN "limit_name" character varying NULL;
-- create index "heldstep_tenant_id_limit_name_priority_since" to table: "held_steps"
CREATE INDEX "heldstep_tenant_id_limit_name_priority_since" ON "held_steps" ("tenant_id", "limit_name", "priority", "since") WHERE (limit_name IS NOT NULL);
-- modify "step_runs" table
ALTER TABLE "step_runs" ADD COLUMN "limit_name" character varying NULL;
-- create index "steprun_tenant_id_limit_name" to table: "step_runs"
CREATE INDEX "steprun_tenant_id_limit_name" ON "step_runs" ("tenant_id", "limit_name") WHERE ((limit_name IS NOT NULL) AND (((status)::text = 'queued'::text) OR ((status)::text = 'running'::text)));
-- create "concurrency_limits" table
CREATE TABLE "concurrency_limits" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "max_running" bigint NOT NULL, "updated_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "concurrency_limits_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "concurrencylimit_tenant_id_name" to table: "concurrency_limits"
CREATE UNIQUE INDEX "concurrencylimit_tenant_id_name" ON "concurrency_limits" ("tenant_id", "name");

-- +goose Down
-- reverse: create index "concurrencylimit_tenant_id_name" to table: "concurrency_limits"
DROP INDEX "concurrencylimit_tenant_id_name";
-- reverse: create "concurrency_limits" table
DROP TABLE "concurrency_limits";
-- reverse: create index "steprun_tenant_id_limit_name" to table: "step_runs"
DROP INDEX "steprun_tenant_id_limit_name";
-- reverse: modify "step_runs" table
ALTER TABLE "step_runs" DROP COLUMN "limit_name";
-- reverse: create index "heldstep_tenant_id_limit_name_priority_since" to table: "held_steps"
DROP INDEX "heldstep_tenant_id_limit_name_priority_since";
-- reverse: modify "held_steps" table
ALTER TABLE "held_steps" DROP COLUMN "limit_name";
