-- +goose Up
-- create index "approvalrequest_tenant_id_run_id" to table: "approval_requests"
CREATE INDEX "approvalrequest_tenant_id_run_id" ON "approval_requests" ("tenant_id", "run_id") WHERE (run_id IS NOT NULL);
-- create index "evaluationexample_tenant_id_source_run_id" to table: "evaluation_examples"
CREATE INDEX "evaluationexample_tenant_id_source_run_id" ON "evaluation_examples" ("tenant_id", "source_run_id");
-- create index "run_open_replay" to table: "runs"
CREATE INDEX "run_open_replay" ON "runs" ("tenant_id", "replay_of") WHERE ((replay_of IS NOT NULL) AND (finished_at IS NULL));

-- +goose Down
-- reverse: create index "run_open_replay" to table: "runs"
DROP INDEX "run_open_replay";
-- reverse: create index "evaluationexample_tenant_id_source_run_id" to table: "evaluation_examples"
DROP INDEX "evaluationexample_tenant_id_source_run_id";
-- reverse: create index "approvalrequest_tenant_id_run_id" to table: "approval_requests"
DROP INDEX "approvalrequest_tenant_id_run_id";
