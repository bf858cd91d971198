-- Hand-written: RLS for environment variables versions (immutable for the app role: see store.appTableGrants).
-- +goose Up
ALTER TABLE "environment_variable_versions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "environment_variable_versions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "environment_variable_versions" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "environment_variable_versions";
ALTER TABLE "environment_variable_versions" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "environment_variable_versions" DISABLE ROW LEVEL SECURITY;
