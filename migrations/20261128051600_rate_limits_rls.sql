-- Hand-written: RLS for rate limit policies and cooldowns, like the other tenant tables.
-- +goose Up
ALTER TABLE "rate_limits" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "rate_limits" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "rate_limits" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "rate_limit_cooldowns" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "rate_limit_cooldowns" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "rate_limit_cooldowns" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "rate_limits";
ALTER TABLE "rate_limits" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "rate_limits" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "rate_limit_cooldowns";
ALTER TABLE "rate_limit_cooldowns" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "rate_limit_cooldowns" DISABLE ROW LEVEL SECURITY;
