-- +goose Up
-- create "tenants" table
CREATE TABLE "tenants" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "slug" character varying NOT NULL, "name" character varying NOT NULL, "retention_days" bigint NOT NULL DEFAULT 90, "monthly_budget_micro_usd" bigint NULL, "sla_defaults" jsonb NULL, "data_key" bytea NOT NULL, "master_key_id" character varying NOT NULL, PRIMARY KEY ("id"));
-- create index "tenants_slug_key" to table: "tenants"
CREATE UNIQUE INDEX "tenants_slug_key" ON "tenants" ("slug");
-- create "environments" table
CREATE TABLE "environments" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "kind" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "environments_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "environment_tenant_id" to table: "environments"
CREATE INDEX "environment_tenant_id" ON "environments" ("tenant_id");
-- create index "environment_tenant_id_name" to table: "environments"
CREATE UNIQUE INDEX "environment_tenant_id_name" ON "environments" ("tenant_id", "name");
-- create "api_keys" table
CREATE TABLE "api_keys" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "token_prefix" character varying NOT NULL, "token_hash" character varying NOT NULL, "roles" jsonb NOT NULL, "created_by" character varying NOT NULL, "expires_at" timestamptz NULL, "revoked_at" timestamptz NULL, "last_used_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "environment_id" character varying NULL, PRIMARY KEY ("id"), CONSTRAINT "api_keys_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE SET NULL, CONSTRAINT "api_keys_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "api_keys_token_hash_key" to table: "api_keys"
CREATE UNIQUE INDEX "api_keys_token_hash_key" ON "api_keys" ("token_hash");
-- create index "apikey_tenant_id" to table: "api_keys"
CREATE INDEX "apikey_tenant_id" ON "api_keys" ("tenant_id");
-- create "audit_logs" table
CREATE TABLE "audit_logs" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "actor" character varying NOT NULL, "actor_type" character varying NOT NULL, "action" character varying NOT NULL, "target_type" character varying NOT NULL, "target_id" character varying NOT NULL, "request_id" character varying NULL, "metadata" jsonb NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "audit_logs_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "auditlog_tenant_id" to table: "audit_logs"
CREATE INDEX "auditlog_tenant_id" ON "audit_logs" ("tenant_id");
-- create index "auditlog_tenant_id_created_at" to table: "audit_logs"
CREATE INDEX "auditlog_tenant_id_created_at" ON "audit_logs" ("tenant_id", "created_at");
-- create "credentials" table
CREATE TABLE "credentials" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "type" character varying NOT NULL, "current_version" bigint NOT NULL, "fingerprint" character varying NOT NULL, "created_by" character varying NOT NULL, "rotated_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "environment_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credentials_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "credentials_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "credential_tenant_id" to table: "credentials"
CREATE INDEX "credential_tenant_id" ON "credentials" ("tenant_id");
-- create index "credential_tenant_id_environment_id_name" to table: "credentials"
CREATE UNIQUE INDEX "credential_tenant_id_environment_id_name" ON "credentials" ("tenant_id", "environment_id", "name");
-- create "credential_versions" table
CREATE TABLE "credential_versions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "version" bigint NOT NULL, "ciphertext" bytea NOT NULL, "fingerprint" character varying NOT NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, "credential_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credential_versions_credentials_credential" FOREIGN KEY ("credential_id") REFERENCES "credentials" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "credential_versions_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "credentialversion_tenant_id" to table: "credential_versions"
CREATE INDEX "credentialversion_tenant_id" ON "credential_versions" ("tenant_id");
-- create index "credentialversion_tenant_id_credential_id_version" to table: "credential_versions"
CREATE UNIQUE INDEX "credentialversion_tenant_id_credential_id_version" ON "credential_versions" ("tenant_id", "credential_id", "version");
-- create "workflows" table
CREATE TABLE "workflows" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "name" character varying NOT NULL, "slug" character varying NOT NULL, "description" character varying NULL, "created_by" character varying NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "workflows_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "workflow_tenant_id" to table: "workflows"
CREATE INDEX "workflow_tenant_id" ON "workflows" ("tenant_id");
-- create index "workflow_tenant_id_slug" to table: "workflows"
CREATE UNIQUE INDEX "workflow_tenant_id_slug" ON "workflows" ("tenant_id", "slug");
-- create "workflow_versions" table
CREATE TABLE "workflow_versions" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "number" bigint NOT NULL, "status" character varying NOT NULL DEFAULT 'draft', "schema_version" bigint NOT NULL, "definition" jsonb NOT NULL, "content_hash" character varying NOT NULL, "created_by" character varying NOT NULL, "published_by" character varying NULL, "published_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "workflow_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "workflow_versions_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "workflow_versions_workflows_workflow" FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "workflowversion_tenant_id" to table: "workflow_versions"
CREATE INDEX "workflowversion_tenant_id" ON "workflow_versions" ("tenant_id");
-- create index "workflowversion_tenant_id_workflow_id_number" to table: "workflow_versions"
CREATE UNIQUE INDEX "workflowversion_tenant_id_workflow_id_number" ON "workflow_versions" ("tenant_id", "workflow_id", "number");
-- create "deployments" table
CREATE TABLE "deployments" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "previous_version_id" character varying NULL, "active" boolean NOT NULL DEFAULT true, "deployed_by" character varying NOT NULL, "superseded_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "workflow_id" character varying NOT NULL, "environment_id" character varying NOT NULL, "version_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "deployments_environments_environment" FOREIGN KEY ("environment_id") REFERENCES "environments" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "deployments_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "deployments_workflow_versions_version" FOREIGN KEY ("version_id") REFERENCES "workflow_versions" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION, CONSTRAINT "deployments_workflows_workflow" FOREIGN KEY ("workflow_id") REFERENCES "workflows" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "deployment_tenant_id" to table: "deployments"
CREATE INDEX "deployment_tenant_id" ON "deployments" ("tenant_id");
-- create index "deployment_tenant_id_workflow_id_environment_id" to table: "deployments"
CREATE UNIQUE INDEX "deployment_tenant_id_workflow_id_environment_id" ON "deployments" ("tenant_id", "workflow_id", "environment_id") WHERE active;
-- create "members" table
CREATE TABLE "members" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "subject" character varying NOT NULL, "roles" jsonb NOT NULL, "tenant_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "members_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "member_tenant_id" to table: "members"
CREATE INDEX "member_tenant_id" ON "members" ("tenant_id");
-- create index "member_tenant_id_subject" to table: "members"
CREATE UNIQUE INDEX "member_tenant_id_subject" ON "members" ("tenant_id", "subject");

-- +goose Down
-- reverse: create index "member_tenant_id_subject" to table: "members"
DROP INDEX "member_tenant_id_subject";
-- reverse: create index "member_tenant_id" to table: "members"
DROP INDEX "member_tenant_id";
-- reverse: create "members" table
DROP TABLE "members";
-- reverse: create index "deployment_tenant_id_workflow_id_environment_id" to table: "deployments"
DROP INDEX "deployment_tenant_id_workflow_id_environment_id";
-- reverse: create index "deployment_tenant_id" to table: "deployments"
DROP INDEX "deployment_tenant_id";
-- reverse: create "deployments" table
DROP TABLE "deployments";
-- reverse: create index "workflowversion_tenant_id_workflow_id_number" to table: "workflow_versions"
DROP INDEX "workflowversion_tenant_id_workflow_id_number";
-- reverse: create index "workflowversion_tenant_id" to table: "workflow_versions"
DROP INDEX "workflowversion_tenant_id";
-- reverse: create "workflow_versions" table
DROP TABLE "workflow_versions";
-- reverse: create index "workflow_tenant_id_slug" to table: "workflows"
DROP INDEX "workflow_tenant_id_slug";
-- reverse: create index "workflow_tenant_id" to table: "workflows"
DROP INDEX "workflow_tenant_id";
-- reverse: create "workflows" table
DROP TABLE "workflows";
-- reverse: create index "credentialversion_tenant_id_credential_id_version" to table: "credential_versions"
DROP INDEX "credentialversion_tenant_id_credential_id_version";
-- reverse: create index "credentialversion_tenant_id" to table: "credential_versions"
DROP INDEX "credentialversion_tenant_id";
-- reverse: create "credential_versions" table
DROP TABLE "credential_versions";
-- reverse: create index "credential_tenant_id_environment_id_name" to table: "credentials"
DROP INDEX "credential_tenant_id_environment_id_name";
-- reverse: create index "credential_tenant_id" to table: "credentials"
DROP INDEX "credential_tenant_id";
-- reverse: create "credentials" table
DROP TABLE "credentials";
-- reverse: create index "auditlog_tenant_id_created_at" to table: "audit_logs"
DROP INDEX "auditlog_tenant_id_created_at";
-- reverse: create index "auditlog_tenant_id" to table: "audit_logs"
DROP INDEX "auditlog_tenant_id";
-- reverse: create "audit_logs" table
DROP TABLE "audit_logs";
-- reverse: create index "apikey_tenant_id" to table: "api_keys"
DROP INDEX "apikey_tenant_id";
-- reverse: create index "api_keys_token_hash_key" to table: "api_keys"
DROP INDEX "api_keys_token_hash_key";
-- reverse: create "api_keys" table
DROP TABLE "api_keys";
-- reverse: create index "environment_tenant_id_name" to table: "environments"
DROP INDEX "environment_tenant_id_name";
-- reverse: create index "environment_tenant_id" to table: "environments"
DROP INDEX "environment_tenant_id";
-- reverse: create "environments" table
DROP TABLE "environments";
-- reverse: create index "tenants_slug_key" to table: "tenants"
DROP INDEX "tenants_slug_key";
-- reverse: create "tenants" table
DROP TABLE "tenants";
