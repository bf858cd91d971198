-- Hand-written: Row-Level Security for every tenant table, and integrity
-- triggers. New tenant tables add the same three statements in their own file.
-- +goose Up
ALTER TABLE "members" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "members" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "members" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "api_keys" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "api_keys" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "api_keys" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "environments" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "environments" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "environments" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "workflows" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "workflows" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "workflows" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "workflow_versions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "workflow_versions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "workflow_versions" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "deployments" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "deployments" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "deployments" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "credentials" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "credentials" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "credentials" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "credential_versions" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "credential_versions" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "credential_versions" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "audit_logs" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "audit_logs" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "audit_logs" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
-- The tenants registry is not FORCEd: its owner (migrations, `sluice tenant`)
-- lists every tenant; the app role sees only the tenant of its transaction.
ALTER TABLE "tenants" ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_self ON "tenants" USING (id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose StatementBegin
CREATE FUNCTION sluice_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('sluice.audit_purge', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_logs is append-only';
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON "audit_logs"
  FOR EACH ROW EXECUTE FUNCTION sluice_audit_append_only();

-- +goose StatementBegin
CREATE FUNCTION sluice_published_version_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND OLD.status = 'published' THEN
    RAISE EXCEPTION 'published workflow version % is immutable', OLD.id;
  END IF;
  IF TG_OP = 'UPDATE' AND OLD.status = 'published' THEN
    RAISE EXCEPTION 'published workflow version % is immutable', OLD.id;
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END;
$$;
-- +goose StatementEnd
CREATE TRIGGER workflow_versions_immutable BEFORE UPDATE OR DELETE ON "workflow_versions"
  FOR EACH ROW EXECUTE FUNCTION sluice_published_version_immutable();

-- +goose Down
DROP TRIGGER workflow_versions_immutable ON "workflow_versions";
DROP FUNCTION sluice_published_version_immutable();
DROP TRIGGER audit_logs_append_only ON "audit_logs";
DROP FUNCTION sluice_audit_append_only();
DROP POLICY tenant_self ON "tenants";
ALTER TABLE "tenants" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "members";
ALTER TABLE "members" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "members" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "api_keys";
ALTER TABLE "api_keys" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "api_keys" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "environments";
ALTER TABLE "environments" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "environments" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "workflows";
ALTER TABLE "workflows" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "workflows" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "workflow_versions";
ALTER TABLE "workflow_versions" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "workflow_versions" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "deployments";
ALTER TABLE "deployments" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "deployments" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "credentials";
ALTER TABLE "credentials" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "credentials" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "credential_versions";
ALTER TABLE "credential_versions" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "credential_versions" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "audit_logs";
ALTER TABLE "audit_logs" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "audit_logs" DISABLE ROW LEVEL SECURITY;
