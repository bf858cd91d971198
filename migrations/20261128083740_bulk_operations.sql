-- +goose Up
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "open_bulk_operations" bigint NOT NULL DEFAULT 0;
-- create "bulk_operation_items" table
CREATE TABLE "bulk_operation_items" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "operation_id" character varying NOT NULL, "position" bigint NOT NULL, "run_id" character varying NOT NULL, "status" character varying NOT NULL DEFAULT 'PENDING', "result_run_id" character varying NULL, "message" character varying NULL, "tries" bigint NOT NULL DEFAULT 0, "acted_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "bulk_operation_items_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "bulkoperationitem_tenant_id_operation_id_position" to table: "bulk_operation_items"
CREATE UNIQUE INDEX "bulkoperationitem_tenant_id_operation_id_position" ON "bulk_operation_items" ("tenant_id", "operation_id", "position");
-- create index "bulkoperationitem_tenant_id_operation_id_run_id" to table: "bulk_operation_items"
CREATE UNIQUE INDEX "bulkoperationitem_tenant_id_operation_id_run_id" ON "bulk_operation_items" ("tenant_id", "operation_id", "run_id");
-- create "bulk_operations" table
CREATE TABLE "bulk_operations" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "action" character varying NOT NULL, "run_filter" jsonb NULL, "options" jsonb NULL, "status" character varying NOT NULL DEFAULT 'QUEUED', "total" bigint NOT NULL, "done" bigint NOT NULL DEFAULT 0, "succeeded" bigint NOT NULL DEFAULT 0, "failed" bigint NOT NULL DEFAULT 0, "skipped" bigint NOT NULL DEFAULT 0, "created_by" character varying NOT NULL, "environment_scope" character varying NOT NULL DEFAULT '', "cancelled_by" character varying NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "bulk_operations_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "bulk_operation_open" to table: "bulk_operations"
CREATE INDEX "bulk_operation_open" ON "bulk_operations" ("tenant_id", "created_at") WHERE (finished_at IS NULL);
-- create index "bulkoperation_tenant_id_created_at" to table: "bulk_operations"
CREATE INDEX "bulkoperation_tenant_id_created_at" ON "bulk_operations" ("tenant_id", "created_at");

-- +goose Down
-- reverse: create index "bulkoperation_tenant_id_created_at" to table: "bulk_operations"
DROP INDEX "bulkoperation_tenant_id_created_at";
-- reverse: create index "bulk_operation_open" to table: "bulk_operations"
DROP INDEX "bulk_operation_open";
-- reverse: create "bulk_operations" table
DROP TABLE "bulk_operations";
-- reverse: create index "bulkoperationitem_tenant_id_operation_id_run_id" to table: "bulk_operation_items"
DROP INDEX "bulkoperationitem_tenant_id_operation_id_run_id";
-- reverse: create index "bulkoperationitem_tenant_id_operation_id_position" to table: "bulk_operation_items"
DROP INDEX "bulkoperationitem_tenant_id_operation_id_position";
-- reverse: create "bulk_operation_items" table
DROP TABLE "bulk_operation_items";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "open_bulk_operations";
