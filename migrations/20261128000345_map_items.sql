-- +goose Up
-- create "map_items" table
CREATE TABLE "map_items" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "run_id" character varying NOT NULL, "step_id" character varying NOT NULL, "index" bigint NOT NULL, "item" jsonb NULL, "status" character varying NOT NULL DEFAULT 'queued', "attempts" bigint NOT NULL DEFAULT 0, "ready_at" timestamptz NULL, "output" jsonb NULL, "error_class" character varying NULL, "error_message" character varying NULL, "calls" jsonb NULL, "cost_micro_usd" bigint NOT NULL DEFAULT 0, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "map_items_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "mapitem_tenant_id_run_id_step_id_index" to table: "map_items"
CREATE UNIQUE INDEX "mapitem_tenant_id_run_id_step_id_index" ON "map_items" ("tenant_id", "run_id", "step_id", "index");
-- create index "mapitem_tenant_id_status_ready_at" to table: "map_items"
CREATE INDEX "mapitem_tenant_id_status_ready_at" ON "map_items" ("tenant_id", "status", "ready_at") WHERE (ready_at IS NOT NULL);

-- +goose Down
-- reverse: create index "mapitem_tenant_id_status_ready_at" to table: "map_items"
DROP INDEX "mapitem_tenant_id_status_ready_at";
-- reverse: create index "mapitem_tenant_id_run_id_step_id_index" to table: "map_items"
DROP INDEX "mapitem_tenant_id_run_id_step_id_index";
-- reverse: create "map_items" table
DROP TABLE "map_items";
