-- +goose Up
-- create index "steprun_waiting_child" to table: "step_runs"
CREATE INDEX "steprun_waiting_child" ON "step_runs" ("tenant_id") WHERE (((status)::text = 'waiting'::text) AND ((type)::text = 'workflow'::text));

-- +goose Down
-- reverse: create index "steprun_waiting_child" to table: "step_runs"
DROP INDEX "steprun_waiting_child";
