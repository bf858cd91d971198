-- Hand-written: a workflow's concurrency setting per environment
-- (internal/concurrency, setWorkflowConcurrency): RLS for
-- workflow_concurrencies, and sluice_release_key reads the environment's
-- override itself (its limit wins over the definition's p_limit), so a
-- keyed run's finish and the keys' sweep use the setting in force without a
-- statement of their own. createRun reads the override with startRun's
-- deployment statement (internal/runs/envconcurrency.go).
-- +goose Up
ALTER TABLE "workflow_concurrencies" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "workflow_concurrencies" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "workflow_concurrencies" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_release_key(p_tenant character varying, p_workflow character varying, p_env character varying, p_key character varying,
    p_limit integer, p_now timestamptz, p_wait boolean)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_lock bigint := hashtextextended('sluice:key:' || p_tenant || '/' || p_workflow || '/' || p_env || '/' || p_key, 0);
  v_active integer;
  v_cap integer;
  v_room integer;
  v_limit integer;
BEGIN
  -- A finishing run does not wait for the key (it holds its run's lock, which
  -- a start that cancels runs in progress may be waiting for): the sweep
  -- releases what it leaves.
  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock) THEN
    RETURN;
  END IF;
  -- The limit in force: the environment's override of the workflow's
  -- concurrency, else the definition's (p_limit); with neither (the
  -- override removed from a workflow whose definition has none) every run
  -- waiting for the key goes.
  SELECT c.run_limit INTO v_limit FROM workflow_concurrencies c
    WHERE c.tenant_id = p_tenant AND c.workflow_id = p_workflow AND c.environment_id = p_env;
  v_limit := coalesce(v_limit, NULLIF(p_limit, 0), 1000000000);
  -- Held rows of runs that finished while waiting (cancelled) go.
  DELETE FROM held_steps h USING runs r WHERE h.tenant_id = p_tenant AND h.reason = 'key_concurrency'
    AND r.tenant_id = p_tenant AND r.id = h.run_id AND r.workflow_id = p_workflow AND r.environment_id = p_env
    AND r.concurrency_key = p_key AND r.status IN ('succeeded', 'failed', 'cancelled');
  SELECT count(*) INTO v_active FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow
    AND r.environment_id = p_env AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
    AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    LIMIT v_limit) a;
  IF v_active >= v_limit THEN
    RETURN;
  END IF;
  -- The tenant's cap on runs (after the key's lock, as in createRun): the
  -- runs the key lets go beyond the tenant's room stay held, for the tenant.
  SELECT t.max_concurrent_runs INTO v_cap FROM tenants t WHERE t.id = p_tenant;
  IF v_cap IS NOT NULL THEN
    IF p_wait THEN
      PERFORM pg_advisory_xact_lock(hashtextextended('sluice:runs:' || p_tenant, 0));
    ELSIF NOT pg_try_advisory_xact_lock(hashtextextended('sluice:runs:' || p_tenant, 0)) THEN
      RETURN;
    END IF;
    SELECT v_cap - count(*) INTO v_room FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant
      AND r.status IN ('queued', 'running', 'waiting') AND r.parent_run_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason IN ('key_concurrency', 'tenant_runs'))
      LIMIT v_cap) a;
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT r.id, row_number() OVER (ORDER BY r.priority, r.created_at, r.id) AS turn FROM runs r
    WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow AND r.environment_id = p_env
      AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
      AND EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    ORDER BY r.priority, r.created_at, r.id
    LIMIT v_limit - v_active
  ), moved AS (
    UPDATE held_steps h SET reason = 'tenant_runs' FROM picked p
    WHERE v_room IS NOT NULL AND p.turn > v_room AND h.tenant_id = p_tenant AND h.run_id = p.id AND h.reason = 'key_concurrency'
    RETURNING h.id
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE (v_room IS NULL OR p.turn <= v_room)
      AND h.tenant_id = p_tenant AND h.run_id = p.id AND h.reason = 'key_concurrency'
    RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_release_key(p_tenant character varying, p_workflow character varying, p_env character varying, p_key character varying,
    p_limit integer, p_now timestamptz, p_wait boolean)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_lock bigint := hashtextextended('sluice:key:' || p_tenant || '/' || p_workflow || '/' || p_env || '/' || p_key, 0);
  v_active integer;
  v_cap integer;
  v_room integer;
BEGIN
  -- A finishing run does not wait for the key (it holds its run's lock, which
  -- a start that cancels runs in progress may be waiting for): the sweep
  -- releases what it leaves.
  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock) THEN
    RETURN;
  END IF;
  -- Held rows of runs that finished while waiting (cancelled) go.
  DELETE FROM held_steps h USING runs r WHERE h.tenant_id = p_tenant AND h.reason = 'key_concurrency'
    AND r.tenant_id = p_tenant AND r.id = h.run_id AND r.workflow_id = p_workflow AND r.environment_id = p_env
    AND r.concurrency_key = p_key AND r.status IN ('succeeded', 'failed', 'cancelled');
  SELECT count(*) INTO v_active FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow
    AND r.environment_id = p_env AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
    AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    LIMIT p_limit) a;
  IF v_active >= p_limit THEN
    RETURN;
  END IF;
  -- The tenant's cap on runs (after the key's lock, as in createRun): the
  -- runs the key lets go beyond the tenant's room stay held, for the tenant.
  SELECT t.max_concurrent_runs INTO v_cap FROM tenants t WHERE t.id = p_tenant;
  IF v_cap IS NOT NULL THEN
    IF p_wait THEN
      PERFORM pg_advisory_xact_lock(hashtextextended('sluice:runs:' || p_tenant, 0));
    ELSIF NOT pg_try_advisory_xact_lock(hashtextextended('sluice:runs:' || p_tenant, 0)) THEN
      RETURN;
    END IF;
    SELECT v_cap - count(*) INTO v_room FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant
      AND r.status IN ('queued', 'running', 'waiting') AND r.parent_run_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason IN ('key_concurrency', 'tenant_runs'))
      LIMIT v_cap) a;
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT r.id, row_number() OVER (ORDER BY r.priority, r.created_at, r.id) AS turn FROM runs r
    WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow AND r.environment_id = p_env
      AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
      AND EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    ORDER BY r.priority, r.created_at, r.id
    LIMIT p_limit - v_active
  ), moved AS (
    UPDATE held_steps h SET reason = 'tenant_runs' FROM picked p
    WHERE v_room IS NOT NULL AND p.turn > v_room AND h.tenant_id = p_tenant AND h.run_id = p.id AND h.reason = 'key_concurrency'
    RETURNING h.id
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE (v_room IS NULL OR p.turn <= v_room)
      AND h.tenant_id = p_tenant AND h.run_id = p.id AND h.reason = 'key_concurrency'
    RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd

DROP POLICY tenant_isolation ON "workflow_concurrencies";
ALTER TABLE "workflow_concurrencies" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "workflow_concurrencies" DISABLE ROW LEVEL SECURITY;
