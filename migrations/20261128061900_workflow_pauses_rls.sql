-- Hand-written: RLS for workflow_pauses.
-- +goose Up
ALTER TABLE "workflow_pauses" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "workflow_pauses" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "workflow_pauses" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "workflow_pauses";
ALTER TABLE "workflow_pauses" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "workflow_pauses" DISABLE ROW LEVEL SECURITY;
