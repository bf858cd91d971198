-- +goose Up
-- create "runs" table
CREATE TABLE "runs" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "status" character varying NOT NULL DEFAULT 'queued', "mode" character varying NOT NULL DEFAULT 'live', "input" jsonb NOT NULL, "input_hash" character varying NOT NULL, "output" jsonb NULL, "idempotency_key" character varying NULL, "replay_of" character varying NULL, "error_class" character varying NULL, "error_message" character varying NULL, "failed_step_id" character varying NULL, "cost_micro_usd" bigint NOT NULL DEFAULT 0, "next_seq" bigint NOT NULL DEFAULT 1, "created_by" character varying NOT NULL, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "workflow_id" character varying NOT NULL, "version_id" character varying NOT NULL, "environment_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "runs_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "runs_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "runs_workflow_versions_version" FOREIGN KEY ("version_id") REFERENCES "workflow_versions" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "runs_workflows_workflow" FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "run_tenant_id" to table: "runs"
CREATE INDEX "run_tenant_id" ON "runs" ("tenant_id");
-- create index "run_tenant_id_idempotency_key" to table: "runs"
CREATE UNIQUE INDEX "run_tenant_id_idempotency_key" ON "runs" ("tenant_id", "idempotency_key") WHERE (idempotency_key IS NOT NULL);
-- create index "run_tenant_id_status_created_at" to table: "runs"
CREATE INDEX "run_tenant_id_status_created_at" ON "runs" ("tenant_id", "status", "created_at");
-- create index "run_tenant_id_workflow_id_created_at" to table: "runs"
CREATE INDEX "run_tenant_id_workflow_id_created_at" ON "runs" ("tenant_id", "workflow_id", "created_at");
-- create "approval_requests" table
CREATE TABLE "approval_requests" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "step_id" character varying NOT NULL, "step_run_id" character varying NOT NULL, "status" character varying NOT NULL DEFAULT 'pending', "message" character varying NULL, "context" jsonb NULL, "approver_roles" jsonb NULL, "approver_subjects" jsonb NULL, "on_timeout" character varying NOT NULL DEFAULT 'fail', "expires_at" timestamptz NULL, "decided_by" character varying NULL, "comment" character varying NULL, "decided_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "approval_requests_runs_run" FOREIGN KEY ("run_id") REFERENCES "runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "approval_requests_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "approvalrequest_tenant_id" to table: "approval_requests"
CREATE INDEX "approvalrequest_tenant_id" ON "approval_requests" ("tenant_id");
-- create index "approvalrequest_tenant_id_status" to table: "approval_requests"
CREATE INDEX "approvalrequest_tenant_id_status" ON "approval_requests" ("tenant_id", "status");
-- create index "approvalrequest_tenant_id_step_run_id" to table: "approval_requests"
CREATE INDEX "approvalrequest_tenant_id_step_run_id" ON "approval_requests" ("tenant_id", "step_run_id");
-- create "run_events" table
CREATE TABLE "run_events" ("id" character varying NOT NULL, "seq" bigint NOT NULL, "type" character varying NOT NULL, "step_id" character varying NULL, "attempt" bigint NULL, "data" jsonb NULL, "at" timestamptz NOT NULL, "tenant_id" character varying NOT NULL, "run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "run_events_runs_run" FOREIGN KEY ("run_id") REFERENCES "runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "run_events_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "runevent_tenant_id" to table: "run_events"
CREATE INDEX "runevent_tenant_id" ON "run_events" ("tenant_id");
-- create index "runevent_tenant_id_run_id_seq" to table: "run_events"
CREATE UNIQUE INDEX "runevent_tenant_id_run_id_seq" ON "run_events" ("tenant_id", "run_id", "seq");
-- create "step_runs" table
CREATE TABLE "step_runs" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "step_id" character varying NOT NULL, "type" character varying NOT NULL, "status" character varying NOT NULL DEFAULT 'pending', "attempts" bigint NOT NULL DEFAULT 0, "current_attempt_id" character varying NULL, "ready_at" timestamptz NULL, "output" jsonb NULL, "error_class" character varying NULL, "error_message" character varying NULL, "cost_micro_usd" bigint NOT NULL DEFAULT 0, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "step_runs_runs_run" FOREIGN KEY ("run_id") REFERENCES "runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "step_runs_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "steprun_status_ready_at" to table: "step_runs"
CREATE INDEX "steprun_status_ready_at" ON "step_runs" ("status", "ready_at");
-- create index "steprun_tenant_id" to table: "step_runs"
CREATE INDEX "steprun_tenant_id" ON "step_runs" ("tenant_id");
-- create index "steprun_tenant_id_run_id_step_id" to table: "step_runs"
CREATE UNIQUE INDEX "steprun_tenant_id_run_id_step_id" ON "step_runs" ("tenant_id", "run_id", "step_id");
-- create "step_attempts" table
CREATE TABLE "step_attempts" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "run_id" character varying NOT NULL, "step_id" character varying NOT NULL, "number" bigint NOT NULL, "status" character varying NOT NULL DEFAULT 'queued', "calls" jsonb NULL, "error_class" character varying NULL, "error_message" character varying NULL, "cost_micro_usd" bigint NOT NULL DEFAULT 0, "scheduled_at" timestamptz NOT NULL, "started_at" timestamptz NULL, "finished_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "step_run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "step_attempts_step_runs_step_run" FOREIGN KEY ("step_run_id") REFERENCES "step_runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "step_attempts_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "stepattempt_tenant_id" to table: "step_attempts"
CREATE INDEX "stepattempt_tenant_id" ON "step_attempts" ("tenant_id");
-- create index "stepattempt_tenant_id_run_id" to table: "step_attempts"
CREATE INDEX "stepattempt_tenant_id_run_id" ON "step_attempts" ("tenant_id", "run_id");
-- create index "stepattempt_tenant_id_step_run_id_number" to table: "step_attempts"
CREATE UNIQUE INDEX "stepattempt_tenant_id_step_run_id_number" ON "step_attempts" ("tenant_id", "step_run_id", "number");

-- +goose Down
-- reverse: create index "stepattempt_tenant_id_step_run_id_number" to table: "step_attempts"
DROP INDEX "stepattempt_tenant_id_step_run_id_number";
-- reverse: create index "stepattempt_tenant_id_run_id" to table: "step_attempts"
DROP INDEX "stepattempt_tenant_id_run_id";
-- reverse: create index "stepattempt_tenant_id" to table: "step_attempts"
DROP INDEX "stepattempt_tenant_id";
-- reverse: create "step_attempts" table
DROP TABLE "step_attempts";
-- reverse: create index "steprun_tenant_id_run_id_step_id" to table: "step_runs"
DROP INDEX "steprun_tenant_id_run_id_step_id";
-- reverse: create index "steprun_tenant_id" to table: "step_runs"
DROP INDEX "steprun_tenant_id";
-- reverse: create index "steprun_status_ready_at" to table: "step_runs"
DROP INDEX "steprun_status_ready_at";
-- reverse: create "step_runs" table
DROP TABLE "step_runs";
-- reverse: create index "runevent_tenant_id_run_id_seq" to table: "run_events"
DROP INDEX "runevent_tenant_id_run_id_seq";
-- reverse: create index "runevent_tenant_id" to table: "run_events"
DROP INDEX "runevent_tenant_id";
-- reverse: create "run_events" table
DROP TABLE "run_events";
-- reverse: create index "approvalrequest_tenant_id_step_run_id" to table: "approval_requests"
DROP INDEX "approvalrequest_tenant_id_step_run_id";
-- reverse: create index "approvalrequest_tenant_id_status" to table: "approval_requests"
DROP INDEX "approvalrequest_tenant_id_status";
-- reverse: create index "approvalrequest_tenant_id" to table: "approval_requests"
DROP INDEX "approvalrequest_tenant_id";
-- reverse: create "approval_requests" table
DROP TABLE "approval_requests";
-- reverse: create index "run_tenant_id_workflow_id_created_at" to table: "runs"
DROP INDEX "run_tenant_id_workflow_id_created_at";
-- reverse: create index "run_tenant_id_status_created_at" to table: "runs"
DROP INDEX "run_tenant_id_status_created_at";
-- reverse: create index "run_tenant_id_idempotency_key" to table: "runs"
DROP INDEX "run_tenant_id_idempotency_key";
-- reverse: create index "run_tenant_id" to table: "runs"
DROP INDEX "run_tenant_id";
-- reverse: create "runs" table
DROP TABLE "runs";
