-- +goose Up
-- create "triggers" table
CREATE TABLE "triggers" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "name" character varying NOT NULL, "hook_id" character varying NOT NULL, "verification" jsonb NOT NULL, "secret" bytea NOT NULL, "secret_version" bigint NOT NULL DEFAULT 1, "previous_secret" bytea NULL, "previous_secret_expires_at" timestamptz NULL, "dedup" jsonb NOT NULL, "event_filter" character varying NULL, "input_mapping" jsonb NULL, "rate_limit" jsonb NOT NULL, "rate_tat" timestamptz NULL, "enabled" boolean NOT NULL DEFAULT true, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "triggers_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "trigger_tenant_id_name" to table: "triggers"
CREATE UNIQUE INDEX "trigger_tenant_id_name" ON "triggers" ("tenant_id", "name");
-- create index "triggers_hook_id_key" to table: "triggers"
CREATE UNIQUE INDEX "triggers_hook_id_key" ON "triggers" ("hook_id");
-- create "trigger_deliveries" table
CREATE TABLE "trigger_deliveries" ("id" character varying NOT NULL, "received_at" timestamptz NOT NULL, "outcome" character varying NOT NULL, "verified" boolean NOT NULL, "reason" character varying NULL, "dedup_key" character varying NULL, "dedup_claim" character varying NULL, "duplicate" boolean NOT NULL DEFAULT false, "filtered" boolean NOT NULL DEFAULT false, "run_id" character varying NULL, "headers" jsonb NULL, "body" bytea NULL, "body_bytes" bigint NOT NULL, "tenant_id" character varying NOT NULL, "trigger_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "trigger_deliveries_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "trigger_deliveries_triggers_trigger" FOREIGN KEY ("trigger_id") REFERENCES "triggers" ("id") ON UPDATE NO ACTION ON DELETE CASCADE);
-- create index "triggerdelivery_tenant_id_trigger_id_dedup_claim" to table: "trigger_deliveries"
CREATE UNIQUE INDEX "triggerdelivery_tenant_id_trigger_id_dedup_claim" ON "trigger_deliveries" ("tenant_id", "trigger_id", "dedup_claim");
-- create index "triggerdelivery_tenant_id_trigger_id_received_at" to table: "trigger_deliveries"
CREATE INDEX "triggerdelivery_tenant_id_trigger_id_received_at" ON "trigger_deliveries" ("tenant_id", "trigger_id", "received_at");

-- +goose Down
-- reverse: create index "triggerdelivery_tenant_id_trigger_id_received_at" to table: "trigger_deliveries"
DROP INDEX "triggerdelivery_tenant_id_trigger_id_received_at";
-- reverse: create index "triggerdelivery_tenant_id_trigger_id_dedup_claim" to table: "trigger_deliveries"
DROP INDEX "triggerdelivery_tenant_id_trigger_id_dedup_claim";
-- reverse: create "trigger_deliveries" table
DROP TABLE "trigger_deliveries";
-- reverse: create index "triggers_hook_id_key" to table: "triggers"
DROP INDEX "triggers_hook_id_key";
-- reverse: create index "trigger_tenant_id_name" to table: "triggers"
DROP INDEX "trigger_tenant_id_name";
-- reverse: create "triggers" table
DROP TABLE "triggers";
