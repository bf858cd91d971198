-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "payload_purged_at" timestamptz NULL, ADD COLUMN "payload_purged_by" character varying NULL, ADD COLUMN "hold_reason" character varying NULL, ADD COLUMN "held_by" character varying NULL, ADD COLUMN "held_at" timestamptz NULL;
-- create index "run_retention_payload" to table: "runs"
CREATE INDEX "run_retention_payload" ON "runs" ("tenant_id", "finished_at") WHERE ((finished_at IS NOT NULL) AND (payload_purged_at IS NULL));
-- create "retention_passes" table
CREATE TABLE "retention_passes" ("id" character varying NOT NULL, "started_at" timestamptz NOT NULL, "finished_at" timestamptz NULL, "payload_runs" bigint NOT NULL DEFAULT 0, "runs_deleted" bigint NOT NULL DEFAULT 0, "audit_deleted" bigint NOT NULL DEFAULT 0, "webhook_deliveries_deleted" bigint NOT NULL DEFAULT 0, "payload_bytes" bigint NOT NULL DEFAULT 0, "batches" bigint NOT NULL DEFAULT 0, "error" character varying NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "retention_passes_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "retentionpass_tenant_id_started_at" to table: "retention_passes"
CREATE INDEX "retentionpass_tenant_id_started_at" ON "retention_passes" ("tenant_id", "started_at");
-- create "retention_policies" table
CREATE TABLE "retention_policies" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "scope" character varying NOT NULL, "target_id" character varying NOT NULL DEFAULT '', "payload_days" bigint NULL, "run_days" bigint NULL, "audit_days" bigint NULL, "webhook_delivery_days" bigint NULL, "updated_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "retention_policies_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "retentionpolicy_tenant_id_scope_target_id" to table: "retention_policies"
CREATE UNIQUE INDEX "retentionpolicy_tenant_id_scope_target_id" ON "retention_policies" ("tenant_id", "scope", "target_id");

-- +goose Down
-- reverse: create index "retentionpolicy_tenant_id_scope_target_id" to table: "retention_policies"
DROP INDEX "retentionpolicy_tenant_id_scope_target_id";
-- reverse: create "retention_policies" table
DROP TABLE "retention_policies";
-- reverse: create index "retentionpass_tenant_id_started_at" to table: "retention_passes"
DROP INDEX "retentionpass_tenant_id_started_at";
-- reverse: create "retention_passes" table
DROP TABLE "retention_passes";
-- reverse: create index "run_retention_payload" to table: "runs"
DROP INDEX "run_retention_payload";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "held_at", DROP COLUMN "held_by", DROP COLUMN "hold_reason", DROP COLUMN "payload_purged_by", DROP COLUMN "payload_purged_at";
