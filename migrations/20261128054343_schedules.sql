-- +goose Up
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "schedules" bigint NOT NULL DEFAULT 0;
-- create "schedule_actions" table
CREATE TABLE "schedule_actions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "schedule_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "source" character varying NOT NULL, "outcome" character varying NOT NULL, "scheduled_at" timestamptz NOT NULL, "acted_at" timestamptz NOT NULL, "run_id" character varying NULL, "message" character varying NULL, "run_open" boolean NOT NULL DEFAULT false, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "schedule_actions_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "schedule_action_open" to table: "schedule_actions"
CREATE INDEX "schedule_action_open" ON "schedule_actions" ("tenant_id", "schedule_id") WHERE run_open;
-- create index "scheduleaction_tenant_id_schedule_id_created_at" to table: "schedule_actions"
CREATE INDEX "scheduleaction_tenant_id_schedule_id_created_at" ON "schedule_actions" ("tenant_id", "schedule_id", "created_at");
-- create "schedules" table
CREATE TABLE "schedules" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "cron" character varying NULL, "every" character varying NULL, "offset" character varying NULL, "timezone" character varying NOT NULL DEFAULT 'UTC', "input" jsonb NULL, "overlap" character varying NOT NULL DEFAULT 'SKIP', "catchup_window_ms" bigint NOT NULL DEFAULT 3600000, "jitter_ms" bigint NOT NULL DEFAULT 0, "start_at" timestamptz NULL, "end_at" timestamptz NULL, "paused" boolean NOT NULL DEFAULT false, "note" character varying NULL, "next_slot_at" timestamptz NULL, "next_fire_at" timestamptz NULL, "buffered_slot_at" timestamptz NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "schedules_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "schedule_due" to table: "schedules"
CREATE INDEX "schedule_due" ON "schedules" ("tenant_id", "next_fire_at") WHERE ((next_fire_at IS NOT NULL) AND (NOT paused));
-- create index "schedule_tenant_id_created_at" to table: "schedules"
CREATE INDEX "schedule_tenant_id_created_at" ON "schedules" ("tenant_id", "created_at");

-- +goose Down
-- reverse: create index "schedule_tenant_id_created_at" to table: "schedules"
DROP INDEX "schedule_tenant_id_created_at";
-- reverse: create index "schedule_due" to table: "schedules"
DROP INDEX "schedule_due";
-- reverse: create "schedules" table
DROP TABLE "schedules";
-- reverse: create index "scheduleaction_tenant_id_schedule_id_created_at" to table: "schedule_actions"
DROP INDEX "scheduleaction_tenant_id_schedule_id_created_at";
-- reverse: create index "schedule_action_open" to table: "schedule_actions"
DROP INDEX "schedule_action_open";
-- reverse: create "schedule_actions" table
DROP TABLE "schedule_actions";
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "schedules";
