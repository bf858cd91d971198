-- +goose Up
-- modify "environments" table
ALTER TABLE "environments" ADD COLUMN "description" character varying NOT NULL DEFAULT '', ADD COLUMN "archived_at" timestamptz NULL, ADD COLUMN "vars_version" bigint NOT NULL DEFAULT 0;
-- modify "runs" table
ALTER TABLE "runs" ADD COLUMN "env_vars_version" bigint NOT NULL DEFAULT 0;
-- create "environment_variable_versions" table
CREATE TABLE "environment_variable_versions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "version" bigint NOT NULL, "variables" jsonb NOT NULL, "set_names" jsonb NULL, "unset_names" jsonb NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, "environment_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "environment_variable_versions_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "environment_variable_versions_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "environmentvariableversion_tenant_id_environment_id_version" to table: "environment_variable_versions"
CREATE UNIQUE INDEX "environmentvariableversion_tenant_id_environment_id_version" ON "environment_variable_versions" ("tenant_id", "environment_id", "version");

-- +goose Down
-- reverse: create index "environmentvariableversion_tenant_id_environment_id_version" to table: "environment_variable_versions"
DROP INDEX "environmentvariableversion_tenant_id_environment_id_version";
-- reverse: create "environment_variable_versions" table
DROP TABLE "environment_variable_versions";
-- reverse: modify "runs" table
ALTER TABLE "runs" DROP COLUMN "env_vars_version";
-- reverse: modify "environments" table
ALTER TABLE "environments" DROP COLUMN "vars_version", DROP COLUMN "archived_at", DROP COLUMN "description";
