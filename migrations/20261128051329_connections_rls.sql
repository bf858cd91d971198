-- Hand-written: RLS for OAuth connections, their authorization states and
-- the steps waiting for a connection.
-- +goose Up
ALTER TABLE "connections" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "connections" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "connections" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "oauth_states" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "oauth_states" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "oauth_states" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "credential_waits" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "credential_waits" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "credential_waits" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "connections";
ALTER TABLE "connections" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "connections" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "oauth_states";
ALTER TABLE "oauth_states" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "oauth_states" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "credential_waits";
ALTER TABLE "credential_waits" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "credential_waits" DISABLE ROW LEVEL SECURITY;
