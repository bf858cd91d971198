-- +goose Up
-- create index "heldstep_dispatchable" to table: "held_steps"
CREATE INDEX "heldstep_dispatchable" ON "held_steps" ("tenant_id") WHERE (((reason)::text = 'tenant_share'::text) OR ((reason)::text = 'tenant_concurrency'::text));
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "max_concurrent_runs" bigint NULL;

-- +goose Down
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "max_concurrent_runs";
-- reverse: create index "heldstep_dispatchable" to table: "held_steps"
DROP INDEX "heldstep_dispatchable";
