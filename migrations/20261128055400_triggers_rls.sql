-- Hand-written: RLS for inbound webhook triggers and their deliveries, and
-- the one way to find a trigger without a tenant: by its hook id.
-- +goose Up
ALTER TABLE "triggers" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "triggers" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "triggers" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
-- POST /hooks/{id} carries no tenant: its transaction names the hook id
-- (app.trigger_hook) and may read that one trigger row to learn the
-- tenant, then opens the tenant's transaction. Knowing the hook id (256
-- random bits) is what the URL grants anyway; reads only, and no other row.
CREATE POLICY trigger_hook_route ON "triggers" FOR SELECT USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '') OR hook_id = NULLIF(current_setting('app.trigger_hook', true), ''));
ALTER TABLE "trigger_deliveries" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "trigger_deliveries" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "trigger_deliveries" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "trigger_deliveries";
ALTER TABLE "trigger_deliveries" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "trigger_deliveries" DISABLE ROW LEVEL SECURITY;
DROP POLICY trigger_hook_route ON "triggers";
DROP POLICY tenant_isolation ON "triggers";
ALTER TABLE "triggers" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "triggers" DISABLE ROW LEVEL SECURITY;
