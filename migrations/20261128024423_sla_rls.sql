-- Hand-written: RLS for SLA policies, incidents and breaches.
-- +goose Up
ALTER TABLE "sla_policies" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "sla_policies" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "sla_policies" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "incidents" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "incidents" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "incidents" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "sla_breaches" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "sla_breaches" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "sla_breaches" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "sla_policies";
ALTER TABLE "sla_policies" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "sla_policies" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "incidents";
ALTER TABLE "incidents" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "incidents" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "sla_breaches";
ALTER TABLE "sla_breaches" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "sla_breaches" DISABLE ROW LEVEL SECURITY;
