-- +goose Up
-- drop index "run_retention_tombstone" from table: "runs"
DROP INDEX "run_retention_tombstone";
-- create index "run_retention_tombstone" to table: "runs"
CREATE INDEX "run_retention_tombstone" ON "runs" ("tenant_id", "finished_at") WHERE ((payload_purged_at IS NOT NULL) AND (finished_at IS NOT NULL));

-- +goose Down
-- reverse: create index "run_retention_tombstone" to table: "runs"
DROP INDEX "run_retention_tombstone";
-- reverse: drop index "run_retention_tombstone" from table: "runs"
CREATE INDEX "run_retention_tombstone" ON "runs" ("tenant_id", "payload_purged_at") WHERE (payload_purged_at IS NOT NULL);
