-- Hand-written: per-workflow concurrency keys (internal/runs/concurrency.go).
-- A run of a workflow whose definition has `concurrency` carries its key
-- (runs.concurrency_key); at most `limit` unfinished runs of the workflow in
-- an environment with one key run at once. A run queued at the limit has
-- its first steps held (held_steps reason key_concurrency, ready_at NULL).
-- sluice_key_active counts a key's running runs under the key's lock;
-- sluice_release_key releases the oldest waiting runs of a key that has
-- room (a run with the key finished, or the sweep). sluice_release_held
-- (fair dispatch) now leaves key_concurrency rows alone: only a key's
-- release lets them go. The functions run as the caller, in the caller's
-- tenant transaction, under row-level security.
-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_release_held(p_tenant character varying, p_now timestamptz, p_share integer)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_weight integer;
  v_hard integer;
  v_cap integer;
  v_queued integer;
  v_running integer;
  v_allowed integer;
BEGIN
  -- One release of a tenant at a time; a release that finds another one
  -- running leaves the work to it.
  IF NOT pg_try_advisory_xact_lock(hashtextextended('sluice:release:' || p_tenant, 0)) THEN
    RETURN;
  END IF;
  SELECT t.dispatch_weight, t.max_concurrent_steps INTO v_weight, v_hard FROM tenants t WHERE t.id = p_tenant;
  v_cap := greatest(p_share, 1) * coalesce(v_weight, 1);
  IF v_hard IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('sluice:steps:' || p_tenant, 0));
    v_cap := least(v_cap, v_hard);
  END IF;
  SELECT count(*) INTO v_queued FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'queued'
    AND s.ready_at <= p_now LIMIT v_cap) q;
  -- Top the queue up once it is half empty: one release per half share.
  IF v_queued * 2 > v_cap THEN
    RETURN;
  END IF;
  v_allowed := v_cap - v_queued;
  IF v_hard IS NOT NULL THEN
    SELECT count(*) INTO v_running FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'running'
      AND s.ready_at IS NOT NULL LIMIT v_hard) r;
    v_allowed := least(v_allowed, v_hard - v_running - v_queued);
  END IF;
  IF v_allowed <= 0 THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH RECURSIVE wfs(workflow_id) AS (
      (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason <> 'key_concurrency' ORDER BY h.workflow_id LIMIT 1)
    UNION ALL
      SELECT (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason <> 'key_concurrency' AND h.workflow_id > w.workflow_id
        ORDER BY h.workflow_id LIMIT 1)
      FROM wfs w WHERE w.workflow_id IS NOT NULL
  ), picked AS (
    SELECT c.id FROM wfs w CROSS JOIN LATERAL (
      SELECT h.id, h.priority, h.since, row_number() OVER (ORDER BY h.priority, h.since) AS turn
      FROM held_steps h WHERE h.tenant_id = p_tenant AND h.workflow_id = w.workflow_id AND h.reason <> 'key_concurrency'
      ORDER BY h.priority, h.since LIMIT v_allowed) c
    WHERE w.workflow_id IS NOT NULL
    ORDER BY c.priority, c.turn, c.since
    LIMIT v_allowed
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE h.id = p.id RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_key_active(p_tenant character varying, p_workflow character varying, p_env character varying, p_key character varying, p_limit integer)
  RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_active integer;
BEGIN
  -- Starts and releases of one key take turns until they commit.
  PERFORM pg_advisory_xact_lock(hashtextextended('sluice:key:' || p_tenant || '/' || p_workflow || '/' || p_env || '/' || p_key, 0));
  SELECT count(*) INTO v_active FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow
    AND r.environment_id = p_env AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
    AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    LIMIT p_limit) a;
  RETURN v_active;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_release_key(p_tenant character varying, p_workflow character varying, p_env character varying, p_key character varying,
    p_limit integer, p_now timestamptz, p_wait boolean)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_lock bigint := hashtextextended('sluice:key:' || p_tenant || '/' || p_workflow || '/' || p_env || '/' || p_key, 0);
  v_active integer;
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
  RETURN QUERY
  WITH picked AS (
    SELECT r.id FROM runs r WHERE r.tenant_id = p_tenant AND r.workflow_id = p_workflow AND r.environment_id = p_env
      AND r.concurrency_key = p_key AND r.status IN ('queued', 'running', 'waiting')
      AND EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason = 'key_concurrency')
    ORDER BY r.priority, r.created_at, r.id
    LIMIT p_limit - v_active
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE h.tenant_id = p_tenant AND h.run_id = p.id AND h.reason = 'key_concurrency'
    RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION sluice_release_key(character varying, character varying, character varying, character varying, integer, timestamptz, boolean);
DROP FUNCTION sluice_key_active(character varying, character varying, character varying, character varying, integer);
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sluice_release_held(p_tenant character varying, p_now timestamptz, p_share integer)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_weight integer;
  v_hard integer;
  v_cap integer;
  v_queued integer;
  v_running integer;
  v_allowed integer;
BEGIN
  -- One release of a tenant at a time; a release that finds another one
  -- running leaves the work to it.
  IF NOT pg_try_advisory_xact_lock(hashtextextended('sluice:release:' || p_tenant, 0)) THEN
    RETURN;
  END IF;
  SELECT t.dispatch_weight, t.max_concurrent_steps INTO v_weight, v_hard FROM tenants t WHERE t.id = p_tenant;
  v_cap := greatest(p_share, 1) * coalesce(v_weight, 1);
  IF v_hard IS NOT NULL THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('sluice:steps:' || p_tenant, 0));
    v_cap := least(v_cap, v_hard);
  END IF;
  SELECT count(*) INTO v_queued FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'queued'
    AND s.ready_at <= p_now LIMIT v_cap) q;
  -- Top the queue up once it is half empty: one release per half share.
  IF v_queued * 2 > v_cap THEN
    RETURN;
  END IF;
  v_allowed := v_cap - v_queued;
  IF v_hard IS NOT NULL THEN
    SELECT count(*) INTO v_running FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'running'
      AND s.ready_at IS NOT NULL LIMIT v_hard) r;
    v_allowed := least(v_allowed, v_hard - v_running - v_queued);
  END IF;
  IF v_allowed <= 0 THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH RECURSIVE wfs(workflow_id) AS (
      (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant ORDER BY h.workflow_id LIMIT 1)
    UNION ALL
      SELECT (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.workflow_id > w.workflow_id
        ORDER BY h.workflow_id LIMIT 1)
      FROM wfs w WHERE w.workflow_id IS NOT NULL
  ), picked AS (
    SELECT c.id FROM wfs w CROSS JOIN LATERAL (
      SELECT h.id, h.priority, h.since, row_number() OVER (ORDER BY h.priority, h.since) AS turn
      FROM held_steps h WHERE h.tenant_id = p_tenant AND h.workflow_id = w.workflow_id
      ORDER BY h.priority, h.since LIMIT v_allowed) c
    WHERE w.workflow_id IS NOT NULL
    ORDER BY c.priority, c.turn, c.since
    LIMIT v_allowed
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE h.id = p.id RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd
