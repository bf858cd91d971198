-- Hand-written: RLS for the response cache, learned response shapes and drift changes.
-- +goose Up
ALTER TABLE "response_cache_entries" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "response_cache_entries" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "response_cache_entries" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "response_shapes" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "response_shapes" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "response_shapes" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "drift_changes" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "drift_changes" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "drift_changes" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "response_cache_entries";
ALTER TABLE "response_cache_entries" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "response_cache_entries" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "response_shapes";
ALTER TABLE "response_shapes" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "response_shapes" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "drift_changes";
ALTER TABLE "drift_changes" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "drift_changes" DISABLE ROW LEVEL SECURITY;
