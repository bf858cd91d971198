-- Hand-written: RLS for the cost tables.
-- +goose Up
ALTER TABLE "model_prices" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "model_prices" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "model_prices" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "model_calls" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "model_calls" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "model_calls" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "model_prices";
ALTER TABLE "model_prices" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "model_prices" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "model_calls";
ALTER TABLE "model_calls" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "model_calls" DISABLE ROW LEVEL SECURITY;
