-- Hand-written: RLS for schedules and their actions, and the listing of
-- tenants with schedules that the schedule ticker visits.
-- +goose Up
ALTER TABLE "schedules" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "schedules" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "schedules" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "schedule_actions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "schedule_actions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "schedule_actions" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The ticker visits only tenants with schedules: ids only, from the tenants
-- registry (not FORCEd), through this function owned by the schema owner.
-- EXECUTE is granted to the app role by `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_scheduling_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id FROM tenants WHERE schedules > 0 ORDER BY id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_scheduling_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_scheduling_tenant_ids();
DROP POLICY tenant_isolation ON "schedules";
ALTER TABLE "schedules" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "schedules" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "schedule_actions";
ALTER TABLE "schedule_actions" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "schedule_actions" DISABLE ROW LEVEL SECURITY;
