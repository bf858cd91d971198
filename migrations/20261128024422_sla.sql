-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "sla_deadline_at" timestamptz NULL, ADD COLUMN "sla_queue_deadline_at" timestamptz NULL, ADD COLUMN "sla_max_cost_micro_usd" bigint NULL, ADD COLUMN "sla_check_at" timestamptz NULL;
-- create index "run_tenant_id_finished_at" to table: "runs"
CREATE INDEX "run_tenant_id_finished_at" ON "runs" ("tenant_id", "finished_at") WHERE ((finished_at IS NOT NULL) AND ((mode)::text = 'live'::text));
-- create index "run_tenant_id_sla_check_at" to table: "runs"
CREATE INDEX "run_tenant_id_sla_check_at" ON "runs" ("tenant_id", "sla_check_at") WHERE ((sla_check_at IS NOT NULL) AND (((status)::text = 'queued'::text) OR ((status)::text = 'running'::text) OR ((status)::text = 'waiting'::text)));
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "sla_version" bigint NOT NULL DEFAULT 0;
-- create "incidents" table
CREATE TABLE "incidents" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "key" character varying NOT NULL, "policy_id" character varying NOT NULL, "objective" character varying NOT NULL, "workflow_id" character varying NULL, "environment_id" character varying NULL, "per_run" boolean NOT NULL, "status" character varying NOT NULL DEFAULT 'TRIGGERED', "severity" character varying NOT NULL, "count" bigint NOT NULL DEFAULT 1, "first_seen_at" timestamptz NOT NULL, "last_seen_at" timestamptz NOT NULL, "sample_run_ids" jsonb NULL, "escalation_policy_id" character varying NULL, "details" jsonb NULL, "healthy_evaluations" bigint NOT NULL DEFAULT 0, "acknowledged_by" character varying NULL, "acknowledged_at" timestamptz NULL, "resolved_by" character varying NULL, "resolved_at" timestamptz NULL, "note" character varying NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "incidents_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "incident_tenant_id_key" to table: "incidents"
CREATE UNIQUE INDEX "incident_tenant_id_key" ON "incidents" ("tenant_id", "key") WHERE ((status)::text <> 'RESOLVED'::text);
-- create index "incident_tenant_id_status_created_at" to table: "incidents"
CREATE INDEX "incident_tenant_id_status_created_at" ON "incidents" ("tenant_id", "status", "created_at");
-- create "sla_breaches" table
CREATE TABLE "sla_breaches" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "run_id" character varying NOT NULL, "objective" character varying NOT NULL, "subject" character varying NOT NULL DEFAULT '', "incident_id" character varying NOT NULL, "policy_id" character varying NOT NULL, "details" jsonb NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "sla_breaches_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "slabreach_tenant_id_run_id_objective_subject" to table: "sla_breaches"
CREATE UNIQUE INDEX "slabreach_tenant_id_run_id_objective_subject" ON "sla_breaches" ("tenant_id", "run_id", "objective", "subject");
-- create "sla_policies" table
CREATE TABLE "sla_policies" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NULL, "environment_id" character varying NULL, "scope_key" character varying NOT NULL, "name" character varying NULL, "objectives" jsonb NOT NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "sla_policies_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "slapolicy_tenant_id_scope_key" to table: "sla_policies"
CREATE UNIQUE INDEX "slapolicy_tenant_id_scope_key" ON "sla_policies" ("tenant_id", "scope_key");

-- +goose Down
-- reverse: create index "slapolicy_tenant_id_scope_key" to table: "sla_policies"
DROP INDEX "slapolicy_tenant_id_scope_key";
-- reverse: create "sla_policies" table
DROP TABLE "sla_policies";
-- reverse: create index "slabreach_tenant_id_run_id_objective_subject" to table: "sla_breaches"
DROP INDEX "slabreach_tenant_id_run_id_objective_subject";
-- reverse: create "sla_breaches" table
DROP TABLE "sla_breaches";
-- reverse: create index "incident_tenant_id_status_created_at" to table: "incidents"
DROP INDEX "incident_tenant_id_status_created_at";
-- reverse: create index "incident_tenant_id_key" to table: "incidents"
DROP INDEX "incident_tenant_id_key";
-- reverse: create "incidents" table
DROP TABLE "incidents";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "sla_version";
-- reverse: create index "run_tenant_id_sla_check_at" to table: "runs"
DROP INDEX "run_tenant_id_sla_check_at";
-- reverse: create index "run_tenant_id_finished_at" to table: "runs"
DROP INDEX "run_tenant_id_finished_at";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "sla_check_at", DROP COLUMN "sla_max_cost_micro_usd", DROP COLUMN "sla_queue_deadline_at", DROP COLUMN "sla_deadline_at";
