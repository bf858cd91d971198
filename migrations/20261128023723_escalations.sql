-- +goose Up
-- create "escalation_policies" table
CREATE TABLE "escalation_policies" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "description" character varying NULL, "levels" jsonb NOT NULL, "repeat" bigint NOT NULL DEFAULT 0, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "escalation_policies_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "escalationpolicy_tenant_id_name" to table: "escalation_policies"
CREATE UNIQUE INDEX "escalationpolicy_tenant_id_name" ON "escalation_policies" ("tenant_id", "name");
-- create "escalations" table
CREATE TABLE "escalations" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "policy_id" character varying NULL, "policy_name" character varying NOT NULL, "subject_kind" character varying NOT NULL, "subject_id" character varying NOT NULL, "run_id" character varying NULL, "dedup_key" character varying NOT NULL, "summary" character varying NOT NULL, "severity" character varying NOT NULL, "details" jsonb NULL, "levels" jsonb NOT NULL, "repeat" bigint NOT NULL, "status" character varying NOT NULL DEFAULT 'active', "level" bigint NOT NULL DEFAULT 0, "loop" bigint NOT NULL DEFAULT 0, "next_fire_at" timestamptz NULL, "firings" jsonb NULL, "acknowledged_at" timestamptz NULL, "acknowledged_by" character varying NULL, "resolved_at" timestamptz NULL, "resolved_by" character varying NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "escalations_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "escalation_tenant_id_next_fire_at" to table: "escalations"
CREATE INDEX "escalation_tenant_id_next_fire_at" ON "escalations" ("tenant_id", "next_fire_at") WHERE (next_fire_at IS NOT NULL);
-- create index "escalation_tenant_id_run_id" to table: "escalations"
CREATE INDEX "escalation_tenant_id_run_id" ON "escalations" ("tenant_id", "run_id") WHERE (run_id IS NOT NULL);
-- create index "escalation_tenant_id_subject_kind_subject_id" to table: "escalations"
CREATE UNIQUE INDEX "escalation_tenant_id_subject_kind_subject_id" ON "escalations" ("tenant_id", "subject_kind", "subject_id");
-- create "pager_duty_sends" table
CREATE TABLE "pager_duty_sends" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "credential_id" character varying NOT NULL, "action" character varying NOT NULL, "dedup_key" character varying NOT NULL, "payload" jsonb NULL, "status" character varying NOT NULL DEFAULT 'pending', "attempts" bigint NOT NULL DEFAULT 0, "next_attempt_at" timestamptz NULL, "last_status_code" bigint NULL, "last_error" character varying NULL, "sent_at" timestamptz NULL, "attempt_list" jsonb NULL, "tenant_id" character varying NOT NULL, "escalation_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "pager_duty_sends_escalations_escalation" FOREIGN KEY ("escalation_id") REFERENCES "escalations" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "pager_duty_sends_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "pagerdutysend_tenant_id_escalation_id_created_at" to table: "pager_duty_sends"
CREATE INDEX "pagerdutysend_tenant_id_escalation_id_created_at" ON "pager_duty_sends" ("tenant_id", "escalation_id", "created_at");
-- create index "pagerdutysend_tenant_id_next_attempt_at" to table: "pager_duty_sends"
CREATE INDEX "pagerdutysend_tenant_id_next_attempt_at" ON "pager_duty_sends" ("tenant_id", "next_attempt_at") WHERE ((status)::text = 'pending'::text);

-- +goose Down
-- reverse: create index "pagerdutysend_tenant_id_next_attempt_at" to table: "pager_duty_sends"
DROP INDEX "pagerdutysend_tenant_id_next_attempt_at";
-- reverse: create index "pagerdutysend_tenant_id_escalation_id_created_at" to table: "pager_duty_sends"
DROP INDEX "pagerdutysend_tenant_id_escalation_id_created_at";
-- reverse: create "pager_duty_sends" table
DROP TABLE "pager_duty_sends";
-- reverse: create index "escalation_tenant_id_subject_kind_subject_id" to table: "escalations"
DROP INDEX "escalation_tenant_id_subject_kind_subject_id";
-- reverse: create index "escalation_tenant_id_run_id" to table: "escalations"
DROP INDEX "escalation_tenant_id_run_id";
-- reverse: create index "escalation_tenant_id_next_fire_at" to table: "escalations"
DROP INDEX "escalation_tenant_id_next_fire_at";
-- reverse: create "escalations" table
DROP TABLE "escalations";
-- reverse: create index "escalationpolicy_tenant_id_name" to table: "escalation_policies"
DROP INDEX "escalationpolicy_tenant_id_name";
-- reverse: create "escalation_policies" table
DROP TABLE "escalation_policies";
