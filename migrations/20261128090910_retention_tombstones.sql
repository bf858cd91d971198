-- +goose Up
-- create index "run_retention_tombstone" to table: "runs"
CREATE INDEX "run_retention_tombstone" ON "runs" ("tenant_id", "payload_purged_at") WHERE (payload_purged_at IS NOT NULL);

-- +goose Down
-- reverse: create index "run_retention_tombstone" to table: "runs"
DROP INDEX "run_retention_tombstone";
