-- +goose Up
-- create "event_waits" table
CREATE TABLE "event_waits" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "step_id" character varying NOT NULL, "step_run_id" character varying NOT NULL, "attempt" bigint NOT NULL, "environment_id" character varying NOT NULL, "event" character varying NOT NULL, "match" character varying NULL, "status" character varying NOT NULL DEFAULT 'pending', "expires_at" timestamptz NOT NULL, "scanned" boolean NOT NULL DEFAULT false, "token_hash" character varying NOT NULL, "event_id" character varying NULL, "resolved_by" character varying NULL, "payload" jsonb NULL, "resolved_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "event_waits_runs_run" FOREIGN KEY ("run_id") REFERENCES "runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "event_waits_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "eventwait_tenant_id_environment_id_event" to table: "event_waits"
CREATE INDEX "eventwait_tenant_id_environment_id_event" ON "event_waits" ("tenant_id", "environment_id", "event") WHERE ((status)::text = 'pending'::text);
-- create index "eventwait_tenant_id_run_id_event_id" to table: "event_waits"
CREATE UNIQUE INDEX "eventwait_tenant_id_run_id_event_id" ON "event_waits" ("tenant_id", "run_id", "event_id") WHERE (event_id IS NOT NULL);
-- create index "eventwait_tenant_id_step_run_id" to table: "event_waits"
CREATE INDEX "eventwait_tenant_id_step_run_id" ON "event_waits" ("tenant_id", "step_run_id");
-- create index "eventwait_token_hash" to table: "event_waits"
CREATE UNIQUE INDEX "eventwait_token_hash" ON "event_waits" ("token_hash");
-- create "inbound_events" table
CREATE TABLE "inbound_events" ("id" character varying NOT NULL, "name" character varying NOT NULL, "dedupe_id" character varying NULL, "data" jsonb NULL, "sent_by" character varying NOT NULL, "received_at" timestamptz NOT NULL, "tenant_id" character varying NOT NULL, "environment_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "inbound_events_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "inbound_events_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "inboundevent_tenant_id_dedupe_id_received_at" to table: "inbound_events"
CREATE INDEX "inboundevent_tenant_id_dedupe_id_received_at" ON "inbound_events" ("tenant_id", "dedupe_id", "received_at");
-- create index "inboundevent_tenant_id_environment_id_name_received_at" to table: "inbound_events"
CREATE INDEX "inboundevent_tenant_id_environment_id_name_received_at" ON "inbound_events" ("tenant_id", "environment_id", "name", "received_at");
-- create index "inboundevent_tenant_id_received_at" to table: "inbound_events"
CREATE INDEX "inboundevent_tenant_id_received_at" ON "inbound_events" ("tenant_id", "received_at");

-- +goose Down
-- reverse: create index "inboundevent_tenant_id_received_at" to table: "inbound_events"
DROP INDEX "inboundevent_tenant_id_received_at";
-- reverse: create index "inboundevent_tenant_id_environment_id_name_received_at" to table: "inbound_events"
DROP INDEX "inboundevent_tenant_id_environment_id_name_received_at";
-- reverse: create index "inboundevent_tenant_id_dedupe_id_received_at" to table: "inbound_events"
DROP INDEX "inboundevent_tenant_id_dedupe_id_received_at";
-- reverse: create "inbound_events" table
DROP TABLE "inbound_events";
-- reverse: create index "eventwait_token_hash" to table: "event_waits"
DROP INDEX "eventwait_token_hash";
-- reverse: create index "eventwait_tenant_id_step_run_id" to table: "event_waits"
DROP INDEX "eventwait_tenant_id_step_run_id";
-- reverse: create index "eventwait_tenant_id_run_id_event_id" to table: "event_waits"
DROP INDEX "eventwait_tenant_id_run_id_event_id";
-- reverse: create index "eventwait_tenant_id_environment_id_event" to table: "event_waits"
DROP INDEX "eventwait_tenant_id_environment_id_event";
-- reverse: create "event_waits" table
DROP TABLE "event_waits";
