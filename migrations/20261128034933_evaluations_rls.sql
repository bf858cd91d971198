-- Hand-written: RLS for evaluations and their examples, and the listing of
-- tenants with open evaluations that the evaluation driver visits.
-- +goose Up
ALTER TABLE "evaluations" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "evaluations" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "evaluations" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "evaluation_examples" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "evaluation_examples" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "evaluation_examples" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- The driver visits only tenants with open evaluations: ids only, from the
-- tenants registry (not FORCEd), through this function owned by the schema
-- owner. EXECUTE is granted to the app role by `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_evaluating_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT id FROM tenants WHERE open_evaluations > 0 ORDER BY id
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_evaluating_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_evaluating_tenant_ids();
DROP POLICY tenant_isolation ON "evaluations";
ALTER TABLE "evaluations" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "evaluations" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "evaluation_examples";
ALTER TABLE "evaluation_examples" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "evaluation_examples" DISABLE ROW LEVEL SECURITY;
