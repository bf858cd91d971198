-- Hand-written: RLS for outside events and the waits of wait steps.
-- +goose Up
ALTER TABLE "inbound_events" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "inbound_events" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "inbound_events" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "event_waits" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "event_waits" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "event_waits" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "event_waits";
ALTER TABLE "event_waits" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "event_waits" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "inbound_events";
ALTER TABLE "inbound_events" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "inbound_events" DISABLE ROW LEVEL SECURITY;
