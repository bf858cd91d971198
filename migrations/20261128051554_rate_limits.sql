-- +goose Up
-- create "rate_limit_cooldowns" table
CREATE TABLE "rate_limit_cooldowns" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "scope" character varying NOT NULL, "until" timestamptz NOT NULL, "status_code" bigint NOT NULL DEFAULT 0, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "rate_limit_cooldowns_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "ratelimitcooldown_tenant_id_scope" to table: "rate_limit_cooldowns"
CREATE UNIQUE INDEX "ratelimitcooldown_tenant_id_scope" ON "rate_limit_cooldowns" ("tenant_id", "scope");
-- create index "ratelimitcooldown_tenant_id_until" to table: "rate_limit_cooldowns"
CREATE INDEX "ratelimitcooldown_tenant_id_until" ON "rate_limit_cooldowns" ("tenant_id", "until");
-- create "rate_limits" table
CREATE TABLE "rate_limits" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "scope" character varying NOT NULL, "environment_id" character varying NULL, "credential_name" character varying NULL, "host" character varying NULL, "across_credentials" boolean NOT NULL DEFAULT false, "scope_key" character varying NOT NULL, "rate" bigint NOT NULL DEFAULT 0, "period" character varying NOT NULL DEFAULT '1s', "burst" bigint NOT NULL DEFAULT 1, "max_concurrent" bigint NOT NULL DEFAULT 0, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "rate_limits_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "ratelimit_tenant_id_scope_key" to table: "rate_limits"
CREATE UNIQUE INDEX "ratelimit_tenant_id_scope_key" ON "rate_limits" ("tenant_id", "scope_key");

-- +goose Down
-- reverse: create index "ratelimit_tenant_id_scope_key" to table: "rate_limits"
DROP INDEX "ratelimit_tenant_id_scope_key";
-- reverse: create "rate_limits" table
DROP TABLE "rate_limits";
-- reverse: create index "ratelimitcooldown_tenant_id_until" to table: "rate_limit_cooldowns"
DROP INDEX "ratelimitcooldown_tenant_id_until";
-- reverse: create index "ratelimitcooldown_tenant_id_scope" to table: "rate_limit_cooldowns"
DROP INDEX "ratelimitcooldown_tenant_id_scope";
-- reverse: create "rate_limit_cooldowns" table
DROP TABLE "rate_limit_cooldowns";
