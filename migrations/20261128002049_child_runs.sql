-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "parent_run_id" character varying NULL, ADD COLUMN "parent_step_id" character varying NULL, ADD COLUMN "depth" bigint NOT NULL DEFAULT 1;
-- create index "run_tenant_id_parent_run_id" to table: "runs"
CREATE INDEX "run_tenant_id_parent_run_id" ON "runs" ("tenant_id", "parent_run_id") WHERE (parent_run_id IS NOT NULL);

-- +goose Down
-- reverse: create index "run_tenant_id_parent_run_id" to table: "runs"
DROP INDEX "run_tenant_id_parent_run_id";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "depth", DROP COLUMN "parent_step_id", DROP COLUMN "parent_run_id";
