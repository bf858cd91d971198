-- Hand-written: RLS for escalation policies, escalations and their PagerDuty sends.
-- +goose Up
ALTER TABLE "escalation_policies" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "escalation_policies" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "escalation_policies" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "escalations" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "escalations" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "escalations" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "pager_duty_sends" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "pager_duty_sends" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "pager_duty_sends" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "pager_duty_sends";
ALTER TABLE "pager_duty_sends" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "pager_duty_sends" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "escalations";
ALTER TABLE "escalations" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "escalations" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "escalation_policies";
ALTER TABLE "escalation_policies" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "escalation_policies" DISABLE ROW LEVEL SECURITY;
