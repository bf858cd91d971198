-- Hand-written: RLS for the run tables, and the tenant listing the reconciler uses.
-- +goose Up
ALTER TABLE "runs" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "runs" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "runs" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "step_runs" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "step_runs" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "step_runs" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "step_attempts" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "step_attempts" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "step_attempts" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "run_events" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "run_events" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "run_events" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "approval_requests" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "approval_requests" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "approval_requests" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The app role cannot read the tenants registry, but the reconciler must
-- visit every tenant. This function, owned by the schema owner (not FORCEd on
-- tenants), returns ids only. EXECUTE is granted to the app role by
-- `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id FROM tenants ORDER BY id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_tenant_ids() FROM PUBLIC;

-- Run events are append-only history.
-- +goose StatementBegin
CREATE FUNCTION sluice_run_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'run_events is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER run_events_append_only BEFORE UPDATE ON "run_events"
  FOR EACH ROW EXECUTE FUNCTION sluice_run_events_append_only();

-- +goose Down
DROP TRIGGER run_events_append_only ON "run_events";
DROP FUNCTION sluice_run_events_append_only();
DROP FUNCTION sluice_tenant_ids();
DROP POLICY tenant_isolation ON "runs";
ALTER TABLE "runs" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "runs" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "step_runs";
ALTER TABLE "step_runs" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "step_runs" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "step_attempts";
ALTER TABLE "step_attempts" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "step_attempts" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "run_events";
ALTER TABLE "run_events" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "run_events" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "approval_requests";
ALTER TABLE "approval_requests" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "approval_requests" DISABLE ROW LEVEL SECURITY;
