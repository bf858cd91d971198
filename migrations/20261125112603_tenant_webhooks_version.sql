-- +goose Up
-- modify "tenants" table
ALTER TABLE "tenants" ADD COLUMN "webhooks_version" bigint NOT NULL DEFAULT 0;

-- +goose Down
-- reverse: modify "tenants" table
ALTER TABLE "tenants" DROP COLUMN "webhooks_version";
