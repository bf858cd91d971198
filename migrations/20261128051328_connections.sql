-- +goose Up
-- create "connections" table
CREATE TABLE "connections" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "environment_id" character varying NOT NULL, "grant" character varying NOT NULL, "provider" character varying NULL, "auth_url" character varying NULL, "token_url" character varying NOT NULL, "scopes" jsonb NULL, "extra_params" jsonb NULL, "status" character varying NOT NULL, "account" character varying NULL, "granted_scopes" jsonb NULL, "expires_at" timestamptz NULL, "last_refreshed_at" timestamptz NULL, "next_refresh_at" timestamptz NULL, "consecutive_failures" bigint NOT NULL DEFAULT 0, "last_error" character varying NULL, "token_version" bigint NOT NULL DEFAULT 0, "tokens" bytea NULL, "tenant_id" character varying NOT NULL, "credential_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "connections_credentials_credential" FOREIGN KEY ("credential_id") REFERENCES "credentials" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "connections_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "connection_tenant_id" to table: "connections"
CREATE INDEX "connection_tenant_id" ON "connections" ("tenant_id");
-- create index "connection_tenant_id_credential_id" to table: "connections"
CREATE UNIQUE INDEX "connection_tenant_id_credential_id" ON "connections" ("tenant_id", "credential_id");
-- create index "connection_tenant_id_next_refresh_at" to table: "connections"
CREATE INDEX "connection_tenant_id_next_refresh_at" ON "connections" ("tenant_id", "next_refresh_at");
-- create "credential_waits" table
CREATE TABLE "credential_waits" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "updated_at" timestamptz NOT NULL, "step_id" character varying NOT NULL, "step_run_id" character varying NOT NULL, "attempt" bigint NOT NULL, "credential_id" character varying NOT NULL, "status" character varying NOT NULL DEFAULT 'waiting', "expires_at" timestamptz NOT NULL, "resolved_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "run_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "credential_waits_runs_run" FOREIGN KEY ("run_id") REFERENCES "runs" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "credential_waits_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "credentialwait_tenant_id" to table: "credential_waits"
CREATE INDEX "credentialwait_tenant_id" ON "credential_waits" ("tenant_id");
-- create index "credentialwait_tenant_id_credential_id_status" to table: "credential_waits"
CREATE INDEX "credentialwait_tenant_id_credential_id_status" ON "credential_waits" ("tenant_id", "credential_id", "status");
-- create index "credentialwait_tenant_id_step_run_id" to table: "credential_waits"
CREATE INDEX "credentialwait_tenant_id_step_run_id" ON "credential_waits" ("tenant_id", "step_run_id");
-- create "oauth_states" table
CREATE TABLE "oauth_states" ("id" character varying NOT NULL, "created_at" timestamptz NOT NULL, "state_hash" character varying NOT NULL, "redirect_after" character varying NOT NULL, "redirect_uri" character varying NOT NULL, "created_by" character varying NOT NULL, "expires_at" timestamptz NOT NULL, "used_at" timestamptz NULL, "tenant_id" character varying NOT NULL, "credential_id" character varying NOT NULL, PRIMARY KEY ("id"), CONSTRAINT "oauth_states_credentials_credential" FOREIGN KEY ("credential_id") REFERENCES "credentials" ("id") ON UPDATE NO ACTION ON DELETE CASCADE, CONSTRAINT "oauth_states_tenants_tenant" FOREIGN KEY ("tenant_id") REFERENCES "tenants" ("id") ON UPDATE NO ACTION ON DELETE NO ACTION);
-- create index "oauthstate_tenant_id" to table: "oauth_states"
CREATE INDEX "oauthstate_tenant_id" ON "oauth_states" ("tenant_id");
-- create index "oauthstate_tenant_id_state_hash" to table: "oauth_states"
CREATE UNIQUE INDEX "oauthstate_tenant_id_state_hash" ON "oauth_states" ("tenant_id", "state_hash");

-- +goose Down
-- reverse: create index "oauthstate_tenant_id_state_hash" to table: "oauth_states"
DROP INDEX "oauthstate_tenant_id_state_hash";
-- reverse: create index "oauthstate_tenant_id" to table: "oauth_states"
DROP INDEX "oauthstate_tenant_id";
-- reverse: create "oauth_states" table
DROP TABLE "oauth_states";
-- reverse: create index "credentialwait_tenant_id_step_run_id" to table: "credential_waits"
DROP INDEX "credentialwait_tenant_id_step_run_id";
-- reverse: create index "credentialwait_tenant_id_credential_id_status" to table: "credential_waits"
DROP INDEX "credentialwait_tenant_id_credential_id_status";
-- reverse: create index "credentialwait_tenant_id" to table: "credential_waits"
DROP INDEX "credentialwait_tenant_id";
-- reverse: create "credential_waits" table
DROP TABLE "credential_waits";
-- reverse: create index "connection_tenant_id_next_refresh_at" to table: "connections"
DROP INDEX "connection_tenant_id_next_refresh_at";
-- reverse: create index "connection_tenant_id_credential_id" to table: "connections"
DROP INDEX "connection_tenant_id_credential_id";
-- reverse: create index "connection_tenant_id" to table: "connections"
DROP INDEX "connection_tenant_id";
-- reverse: create "connections" table
DROP TABLE "connections";
