-- +goose Up
-- drop index "runevent_tenant_id" from table: "run_events"
DROP INDEX "runevent_tenant_id";
-- drop index "run_tenant_id" from table: "runs"
DROP INDEX "run_tenant_id";
-- drop index "stepattempt_tenant_id" from table: "step_attempts"
DROP INDEX "stepattempt_tenant_id";
-- drop index "steprun_status_ready_at" from table: "step_runs"
DROP INDEX "steprun_status_ready_at";
-- drop index "steprun_tenant_id" from table: "step_runs"
DROP INDEX "steprun_tenant_id";
-- create index "steprun_tenant_id_status_ready_at" to table: "step_runs"
CREATE INDEX "steprun_tenant_id_status_ready_at" ON "step_runs" ("tenant_id", "status", "ready_at") WHERE (ready_at IS NOT NULL);

-- +goose Down
-- reverse: create index "steprun_tenant_id_status_ready_at" to table: "step_runs"
DROP INDEX "steprun_tenant_id_status_ready_at";
-- reverse: drop index "steprun_tenant_id" from table: "step_runs"
CREATE INDEX "steprun_tenant_id" ON "step_runs" ("tenant_id");
-- reverse: drop index "steprun_status_ready_at" from table: "step_runs"
CREATE INDEX "steprun_status_ready_at" ON "step_runs" ("status", "ready_at");
-- reverse: drop index "stepattempt_tenant_id" from table: "step_attempts"
CREATE INDEX "stepattempt_tenant_id" ON "step_attempts" ("tenant_id");
-- reverse: drop index "run_tenant_id" from table: "runs"
CREATE INDEX "run_tenant_id" ON "runs" ("tenant_id");
-- reverse: drop index "runevent_tenant_id" from table: "run_events"
CREATE INDEX "runevent_tenant_id" ON "run_events" ("tenant_id");
