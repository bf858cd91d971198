-- +goose Up
-- create "model_calls" table
CREATE TABLE "model_calls" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "run_id" character varying NOT NULL, "step_id" character varying NOT NULL, "attempt_id" character varying NOT NULL, "workflow_id" character varying NOT NULL, "version_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "provider" character varying NOT NULL, "model" character varying NOT NULL, "input_tokens" bigint NOT NULL, "output_tokens" bigint NOT NULL, "cached_input_tokens" bigint NOT NULL, "cost_micro_usd" bigint NOT NULL, "priced" boolean NOT NULL, "latency_ms" bigint NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "model_calls_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "modelcall_tenant_id" to table: "model_calls"
CREATE INDEX "modelcall_tenant_id" ON "model_calls" ("tenant_id");
-- create index "modelcall_tenant_id_created_at" to table: "model_calls"
CREATE INDEX "modelcall_tenant_id_created_at" ON "model_calls" ("tenant_id", "created_at");
-- create index "modelcall_tenant_id_run_id" to table: "model_calls"
CREATE INDEX "modelcall_tenant_id_run_id" ON "model_calls" ("tenant_id", "run_id");
-- create "model_prices" table
CREATE TABLE "model_prices" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "provider" character varying NOT NULL, "model" character varying NOT NULL, "input_micro_usd_per_mtok" bigint NOT NULL, "output_micro_usd_per_mtok" bigint NOT NULL, "cached_input_micro_usd_per_mtok" bigint NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "model_prices_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "modelprice_tenant_id" to table: "model_prices"
CREATE INDEX "modelprice_tenant_id" ON "model_prices" ("tenant_id");
-- create index "modelprice_tenant_id_provider_model" to table: "model_prices"
CREATE UNIQUE INDEX "modelprice_tenant_id_provider_model" ON "model_prices" ("tenant_id", "provider", "model");

-- +goose Down
-- reverse: create index "modelprice_tenant_id_provider_model" to table: "model_prices"
DROP INDEX "modelprice_tenant_id_provider_model";
-- reverse: create index "modelprice_tenant_id" to table: "model_prices"
DROP INDEX "modelprice_tenant_id";
-- reverse: create "model_prices" table
DROP TABLE "model_prices";
-- reverse: create index "modelcall_tenant_id_run_id" to table: "model_calls"
DROP INDEX "modelcall_tenant_id_run_id";
-- reverse: create index "modelcall_tenant_id_created_at" to table: "model_calls"
DROP INDEX "modelcall_tenant_id_created_at";
-- reverse: create index "modelcall_tenant_id" to table: "model_calls"
DROP INDEX "modelcall_tenant_id";
-- reverse: create "model_calls" table
DROP TABLE "model_calls";
