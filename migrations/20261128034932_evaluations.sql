-- +goose Up
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "open_evaluations" bigint NOT NULL DEFAULT 0;
-- create "evaluation_examples" table
CREATE TABLE "evaluation_examples" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "evaluation_id" character varying NOT NULL, "position" bigint NOT NULL, "source_run_id" character varying NOT NULL, "candidate_run_id" character varying NULL, "status" character varying NOT NULL DEFAULT 'PENDING', "verdict" character varying NULL, "baseline_output" jsonb NULL, "candidate_output" jsonb NULL, "diff" jsonb NULL, "scores" jsonb NULL, "baseline_cost_micro_usd" bigint NOT NULL DEFAULT 0, "candidate_cost_micro_usd" bigint NOT NULL DEFAULT 0, "baseline_tokens" bigint NOT NULL DEFAULT 0, "candidate_tokens" bigint NOT NULL DEFAULT 0, "baseline_duration_ms" bigint NOT NULL DEFAULT 0, "candidate_duration_ms" bigint NOT NULL DEFAULT 0, "message" character varying NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "evaluation_examples_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "evaluationexample_tenant_id_evaluation_id_position" to table: "evaluation_examples"
CREATE UNIQUE INDEX "evaluationexample_tenant_id_evaluation_id_position" ON "evaluation_examples" ("tenant_id", "evaluation_id", "position");
-- create "evaluations" table
CREATE TABLE "evaluations" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "baseline_version_id" character varying NOT NULL, "candidate_version_id" character varying NOT NULL, "model_overrides" jsonb NULL, "scorers" jsonb NULL, "recorded_only" boolean NOT NULL DEFAULT false, "concurrency" bigint NOT NULL DEFAULT 4, "budget_micro_usd" bigint NULL, "status" character varying NOT NULL DEFAULT 'QUEUED', "total" bigint NOT NULL, "done" bigint NOT NULL DEFAULT 0, "spent_micro_usd" bigint NOT NULL DEFAULT 0, "summary" jsonb NULL, "message" character varying NULL, "created_by" character varying NOT NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "evaluations_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "evaluation_open" to table: "evaluations"
CREATE INDEX "evaluation_open" ON "evaluations" ("tenant_id", "created_at") WHERE (finished_at IS NULL);
-- create index "evaluation_tenant_id_created_at" to table: "evaluations"
CREATE INDEX "evaluation_tenant_id_created_at" ON "evaluations" ("tenant_id", "created_at");

-- +goose Down
-- reverse: create index "evaluation_tenant_id_created_at" to table: "evaluations"
DROP INDEX "evaluation_tenant_id_created_at";
-- reverse: create index "evaluation_open" to table: "evaluations"
DROP INDEX "evaluation_open";
-- reverse: create "evaluations" table
DROP TABLE "evaluations";
-- reverse: create index "evaluationexample_tenant_id_evaluation_id_position" to table: "evaluation_examples"
DROP INDEX "evaluationexample_tenant_id_evaluation_id_position";
-- reverse: create "evaluation_examples" table
DROP TABLE "evaluation_examples";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "open_evaluations";
