-- +goose Up
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "concurrency_key" character varying NULL;
-- create index "run_concurrency_key" to table: "runs"
CREATE INDEX "run_concurrency_key" ON "runs" ("tenant_id", "workflow_id", "environment_id", "concurrency_key", "created_at") WHERE ((concurrency_key IS NOT NULL) AND (((status)::text = 'queued'::text) OR ((status)::text = 'running'::text) OR ((status)::text = 'waiting'::text)));

-- +goose Down
-- reverse: create index "run_concurrency_key" to table: "runs"
DROP INDEX "run_concurrency_key";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "concurrency_key";
