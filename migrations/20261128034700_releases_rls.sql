-- Hand-written: RLS for releases.
-- +goose Up
ALTER TABLE "releases" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "releases" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "releases" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "releases";
ALTER TABLE "releases" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "releases" DISABLE ROW LEVEL SECURITY;
