-- Hand-written: RLS for the webhook tables.
-- +goose Up
ALTER TABLE "webhook_endpoints" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "webhook_endpoints" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "webhook_endpoints" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "webhook_deliveries" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "webhook_deliveries" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "webhook_deliveries" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "webhook_attempts" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "webhook_attempts" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "webhook_attempts" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "webhook_endpoints";
ALTER TABLE "webhook_endpoints" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "webhook_endpoints" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "webhook_deliveries";
ALTER TABLE "webhook_deliveries" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "webhook_deliveries" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "webhook_attempts";
ALTER TABLE "webhook_attempts" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "webhook_attempts" DISABLE ROW LEVEL SECURITY;
