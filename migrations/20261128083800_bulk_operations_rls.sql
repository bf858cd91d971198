-- Hand-written: RLS for bulk operations and their items, and the listing of
-- tenants with open bulk operations that the bulk processor visits.
-- +goose Up
ALTER TABLE "bulk_operations" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "bulk_operations" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "bulk_operations" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "bulk_operation_items" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "bulk_operation_items" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "bulk_operation_items" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The processor visits only tenants with open bulk operations: ids only,
-- from the tenants registry (not FORCEd), through this function owned by
-- the schema owner. EXECUTE is granted to the app role by `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_bulk_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id FROM tenants WHERE open_bulk_operations > 0 ORDER BY id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_bulk_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_bulk_tenant_ids();
DROP POLICY tenant_isolation ON "bulk_operations";
ALTER TABLE "bulk_operations" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "bulk_operations" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "bulk_operation_items";
ALTER TABLE "bulk_operation_items" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "bulk_operation_items" DISABLE ROW LEVEL SECURITY;
