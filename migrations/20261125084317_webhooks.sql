-- +goose Up
-- create "webhook_endpoints" table
CREATE TABLE "webhook_endpoints" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "url" character varying NOT NULL, "description" character varying NULL, "event_types" jsonb NULL, "enabled" boolean NOT NULL DEFAULT true, "disabled_reason" character varying NULL, "secret" bytea NOT NULL, "secret_version" bigint NOT NULL DEFAULT 1, "previous_secret" bytea NULL, "previous_secret_expires_at" timestamptz NULL, "failing_since" timestamptz NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "webhook_endpoints_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "webhookendpoint_tenant_id" to table: "webhook_endpoints"
CREATE INDEX "webhookendpoint_tenant_id" ON "webhook_endpoints" ("tenant_id");
-- create "webhook_deliveries" table
CREATE TABLE "webhook_deliveries" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "webhook_id" character varying NOT NULL, "event_type" character varying NOT NULL, "run_id" character varying NULL, "seq" bigint NULL, "payload" jsonb NOT NULL, "status" character varying NOT NULL DEFAULT 'pending', "attempts" bigint NOT NULL DEFAULT 0, "next_attempt_at" timestamptz NULL, "last_status_code" bigint NULL, "last_error" character varying NULL, "delivered_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "endpoint_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "webhook_deliveries_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "webhook_deliveries_webhook_endpoints_endpoint" FOREIGN KEY ("endpoint_id") REFERENCES "webhook_endpoints" ("id") ON UPDATE NO ACTION ON DELETE CASCADE);
-- create index "webhook_deliveries_webhook_id_key" to table: "webhook_deliveries"
CREATE UNIQUE INDEX "webhook_deliveries_webhook_id_key" ON "webhook_deliveries" ("webhook_id");
-- create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_status_next_attempt_at" ON "webhook_deliveries" ("status", "next_attempt_at");
-- create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_tenant_id" ON "webhook_deliveries" ("tenant_id");
-- create index "webhookdelivery_tenant_id_endpoint_id_created_at" to table: "webhook_deliveries"
CREATE INDEX "webhookdelivery_tenant_id_endpoint_id_created_at" ON "webhook_deliveries" ("tenant_id", "endpoint_id", "created_at");
-- create "webhook_attempts" table
CREATE TABLE "webhook_attempts" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "number" bigint NOT NULL, "status_code" bigint NULL, "latency_ms" bigint NOT NULL, "error" character varying NULL, "next_attempt_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "delivery_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "webhook_attempts_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "webhook_attempts_webhook_deliveries_delivery" FOREIGN KEY ("delivery_id") REFERENCES "webhook_deliveries" ("id") ON UPDATE NO ACTION ON DELETE CASCADE);
-- create index "webhookattempt_tenant_id" to table: "webhook_attempts"
CREATE INDEX "webhookattempt_tenant_id" ON "webhook_attempts" ("tenant_id");
-- create index "webhookattempt_tenant_id_delivery_id_number" to table: "webhook_attempts"
CREATE UNIQUE INDEX "webhookattempt_tenant_id_delivery_id_number" ON "webhook_attempts" ("tenant_id", "delivery_id", "number");

-- +goose Down
-- reverse: create index "webhookattempt_tenant_id_delivery_id_number" to table: "webhook_attempts"
DROP INDEX "webhookattempt_tenant_id_delivery_id_number";
-- reverse: create index "webhookattempt_tenant_id" to table: "webhook_attempts"
DROP INDEX "webhookattempt_tenant_id";
-- reverse: create "webhook_attempts" table
DROP TABLE "webhook_attempts";
-- reverse: create index "webhookdelivery_tenant_id_endpoint_id_created_at" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_tenant_id_endpoint_id_created_at";
-- reverse: create index "webhookdelivery_tenant_id" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_tenant_id";
-- reverse: create index "webhookdelivery_status_next_attempt_at" to table: "webhook_deliveries"
DROP INDEX "webhookdelivery_status_next_attempt_at";
-- reverse: create index "webhook_deliveries_webhook_id_key" to table: "webhook_deliveries"
DROP INDEX "webhook_deliveries_webhook_id_key";
-- reverse: create "webhook_deliveries" table
DROP TABLE "webhook_deliveries";
-- reverse: create index "webhookendpoint_tenant_id" to table: "webhook_endpoints"
DROP INDEX "webhookendpoint_tenant_id";
-- reverse: create "webhook_endpoints" table
DROP TABLE "webhook_endpoints";
