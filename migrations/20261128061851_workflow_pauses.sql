-- +goose Up
-- create "workflow_pauses" table
CREATE TABLE "workflow_pauses" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "mode" character varying NOT NULL, "reason" character varying NOT NULL DEFAULT '', "paused_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "workflow_pauses_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "workflowpause_tenant_id_workflow_id_environment_id" to table: "workflow_pauses"
CREATE UNIQUE INDEX "workflowpause_tenant_id_workflow_id_environment_id" ON "workflow_pauses" ("tenant_id", "workflow_id", "environment_id");

-- +goose Down
-- reverse: create index "workflowpause_tenant_id_workflow_id_environment_id" to table: "workflow_pauses"
DROP INDEX "workflowpause_tenant_id_workflow_id_environment_id";
-- reverse: create "workflow_pauses" table
DROP TABLE "workflow_pauses";
