-- Hand-written: RLS for exports, and the listing of tenants with open
-- exports that the export driver visits.
-- +goose Up
ALTER TABLE "exports" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "exports" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "exports" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The driver visits only tenants with queued or running exports: ids only,
-- from the tenants registry (not FORCEd), through this function owned by
-- the schema owner. EXECUTE is granted to the app role by `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_exporting_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id FROM tenants WHERE open_exports > 0 ORDER BY id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_exporting_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_exporting_tenant_ids();
DROP POLICY tenant_isolation ON "exports";
ALTER TABLE "exports" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "exports" DISABLE ROW LEVEL SECURITY;
