-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "priority" bigint NOT NULL DEFAULT 3;
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "dispatch_weight" bigint NOT NULL DEFAULT 1, ADD COLUMN "max_concurrent_steps" bigint NULL;
-- create "held_steps" table
CREATE TABLE "held_steps" ("id" character varying NOT NULL, "run_id" character varying NOT NULL, "step_id" character varying NOT NULL, "workflow_id" character varying NOT NULL, "priority" bigint NOT NULL, "reason" character varying NOT NULL, "since" timestamptz NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "held_steps_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "heldstep_tenant_id_run_id" to table: "held_steps"
CREATE INDEX "heldstep_tenant_id_run_id" ON "held_steps" ("tenant_id", "run_id");
-- create index "heldstep_tenant_id_workflow_id_priority_since" to table: "held_steps"
CREATE INDEX "heldstep_tenant_id_workflow_id_priority_since" ON "held_steps" ("tenant_id", "workflow_id", "priority", "since");

-- +goose Down
-- reverse: create index "heldstep_tenant_id_workflow_id_priority_since" to table: "held_steps"
DROP INDEX "heldstep_tenant_id_workflow_id_priority_since";
-- reverse: create index "heldstep_tenant_id_run_id" to table: "held_steps"
DROP INDEX "heldstep_tenant_id_run_id";
-- reverse: create "held_steps" table
DROP TABLE "held_steps";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "max_concurrent_steps", DROP COLUMN "dispatch_weight";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "priority";
