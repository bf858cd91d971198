-- +goose Up
-- create "workflow_concurrencies" table
CREATE TABLE "workflow_concurrencies" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "run_limit" bigint NOT NULL, "key" character varying NOT NULL DEFAULT '', "on_limit" character varying NOT NULL DEFAULT 'queue', "updated_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "workflow_concurrencies_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "workflowconcurrency_tenant_id_workflow_id_environment_id" to table: "workflow_concurrencies"
CREATE UNIQUE INDEX "workflowconcurrency_tenant_id_workflow_id_environment_id" ON "workflow_concurrencies" ("tenant_id", "workflow_id", "environment_id");

-- +goose Down
-- reverse: create index "workflowconcurrency_tenant_id_workflow_id_environment_id" to table: "workflow_concurrencies"
DROP INDEX "workflowconcurrency_tenant_id_workflow_id_environment_id";
-- reverse: create "workflow_concurrencies" table
DROP TABLE "workflow_concurrencies";
