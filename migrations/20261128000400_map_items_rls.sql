-- Hand-written: RLS for map items, like the other run tables.
-- +goose Up
ALTER TABLE "map_items" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "map_items" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "map_items" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose Down
DROP POLICY tenant_isolation ON "map_items";
ALTER TABLE "map_items" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "map_items" DISABLE ROW LEVEL SECURITY;
