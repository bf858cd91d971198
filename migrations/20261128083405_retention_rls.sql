-- Hand-written: RLS for retention_policies and retention_passes, and the
-- two purges the app role may not do itself (internal/retention): clearing
-- the data of run events (append-only) and deleting audit entries
-- (append-only) past the tenant's policy. Both are SECURITY DEFINER
-- functions owned by the schema owner that act only in the tenant of the
-- calling transaction; EXECUTE is granted to the app role by
-- `sluice migrate up`.
-- +goose Up
ALTER TABLE "retention_policies" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "retention_policies" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "retention_policies" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));
ALTER TABLE "retention_passes" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "retention_passes" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "retention_passes" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- Run events stay append-only, except that the retention purge (below)
-- may clear an event's data, and nothing else.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_run_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('sluice.retention_purge', true) = 'on' AND NEW.data IS NULL
     AND NEW.id = OLD.id AND NEW.run_id = OLD.run_id AND NEW.tenant_id = OLD.tenant_id AND NEW.seq = OLD.seq
     AND NEW.type = OLD.type AND NEW.at = OLD.at
     AND NEW.step_id IS NOT DISTINCT FROM OLD.step_id AND NEW.attempt IS NOT DISTINCT FROM OLD.attempt THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'run_events is append-only';
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_retention_purge_event_data(p_tenant character varying, p_runs character varying[]) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  n bigint;
BEGIN
  IF p_tenant IS NULL OR p_tenant IS DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '') THEN
    RAISE EXCEPTION 'retention purge outside the transaction''s tenant';
  END IF;
  PERFORM set_config('sluice.retention_purge', 'on', true);
  UPDATE run_events SET data = NULL WHERE tenant_id = p_tenant AND run_id = ANY(p_runs) AND data IS NOT NULL;
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('sluice.retention_purge', 'off', true);
  RETURN n;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_retention_purge_event_data(character varying, character varying[]) FROM PUBLIC;

-- +goose StatementBegin
CREATE FUNCTION sluice_retention_purge_audit(p_tenant character varying, p_before timestamptz, p_limit integer) RETURNS bigint
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  n bigint;
BEGIN
  IF p_tenant IS NULL OR p_tenant IS DISTINCT FROM NULLIF(current_setting('app.tenant_id', true), '') THEN
    RAISE EXCEPTION 'retention purge outside the transaction''s tenant';
  END IF;
  PERFORM set_config('sluice.audit_purge', 'on', true);
  DELETE FROM audit_logs WHERE tenant_id = p_tenant AND id IN (
    SELECT id FROM audit_logs WHERE tenant_id = p_tenant AND created_at < p_before ORDER BY created_at, id LIMIT p_limit);
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM set_config('sluice.audit_purge', 'off', true);
  RETURN n;
END;
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_retention_purge_audit(character varying, timestamptz, integer) FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_retention_purge_audit(character varying, timestamptz, integer);
DROP FUNCTION sluice_retention_purge_event_data(character varying, character varying[]);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_run_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'run_events is append-only';
END;
$$;
-- +goose StatementEnd
DROP POLICY tenant_isolation ON "retention_passes";
ALTER TABLE "retention_passes" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "retention_passes" DISABLE ROW LEVEL SECURITY;
DROP POLICY tenant_isolation ON "retention_policies";
ALTER TABLE "retention_policies" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "retention_policies" DISABLE ROW LEVEL SECURITY;
