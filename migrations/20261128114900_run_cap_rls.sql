-- Hand-written: the tenant's cap on unfinished runs, plan.maxConcurrentRuns
-- (internal/runs/runcap.go). A tenant with tenants.max_concurrent_runs has at
-- most that many runs that are unfinished and not waiting for a run-level
-- limit (a concurrency key, or this cap); child runs run in their parent's
-- place and neither count nor wait. A new run at the cap is created queued
-- with its first steps held (held_steps reason tenant_runs, ready_at NULL).
-- sluice_runs_active counts the tenant's active runs under the tenant's
-- runs lock (createRun); sluice_release_runs releases the oldest waiting
-- runs (priority, then age) that fit (a run finished, or the sweep).
-- sluice_release_key now also respects the tenant's cap: a run its key lets
-- go while the tenant is at its cap stays held, for the tenant (its rows'
-- reason becomes tenant_runs). Fair dispatch's sluice_release_held releases
-- only its own rows (tenant_share, tenant_concurrency), which the index
-- heldstep_dispatchable covers, as does lockRunSQL's "tenant has held steps"
-- flag. The functions run as the caller, in the caller's tenant
-- transaction, under row-level security.
-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION sluice_runs_active(p_tenant character varying, p_cap integer)
  RETURNS integer LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_active integer;
BEGIN
  -- Starts and releases of the tenant's runs take turns until they commit.
  PERFORM pg_advisory_xact_lock(hashtextextended('sluice:runs:' || p_tenant, 0));
  SELECT count(*) INTO v_active FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant
    AND r.status IN ('queued', 'running', 'waiting') AND r.parent_run_id IS NULL
    AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason IN ('key_concurrency', 'tenant_runs'))
    LIMIT p_cap) a;
  RETURN v_active;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_release_runs(p_tenant character varying, p_now timestamptz, p_wait boolean)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_lock bigint := hashtextextended('sluice:runs:' || p_tenant, 0);
  v_cap integer;
  v_active integer := 0;
BEGIN
  -- A finishing run does not wait for the tenant's lock (it holds its run's
  -- lock): the sweep releases what it leaves.
  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock) THEN
    RETURN;
  END IF;
  -- Held rows of runs that finished while waiting (cancelled) go.
  DELETE FROM held_steps h USING runs r WHERE h.tenant_id = p_tenant AND h.reason = 'tenant_runs'
    AND r.tenant_id = p_tenant AND r.id = h.run_id AND r.status IN ('succeeded', 'failed', 'cancelled');
  SELECT t.max_concurrent_runs INTO v_cap FROM tenants t WHERE t.id = p_tenant;
  -- Without a cap (it was removed) everything waiting for it goes.
  IF v_cap IS NOT NULL THEN
    SELECT count(*) INTO v_active FROM (SELECT 1 FROM runs r WHERE r.tenant_id = p_tenant
      AND r.status IN ('queued', 'running', 'waiting') AND r.parent_run_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.run_id = r.id AND h.reason IN ('key_concurrency', 'tenant_runs'))
      LIMIT v_cap) a;
    IF v_active >= v_cap THEN
      RETURN;
    END IF;
  END IF;
  RETURN QUERY
  WITH waiting AS (
    SELECT h.run_id, min(h.priority) AS priority, min(h.since) AS since FROM held_steps h
    WHERE h.tenant_id = p_tenant AND h.reason = 'tenant_runs' GROUP BY h.run_id
  ), picked AS (
    SELECT w.run_id FROM waiting w ORDER BY w.priority, w.since, w.run_id
    LIMIT CASE WHEN v_cap IS NULL THEN NULL ELSE v_cap - v_active END
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE h.tenant_id = p_tenant AND h.run_id = p.run_id AND h.reason = 'tenant_runs'
    RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now FROM gone g
  WHERE s.id = g.id AND s.status = 'queued' AND s.ready_at IS NULL
  RETURNING s.run_id, s.step_id, s.type, s.current_attempt_id, (SELECT r.version_id FROM runs r WHERE r.id = s.run_id);
END $$;
-- +goose StatementEnd

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
      (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason IN ('tenant_share', 'tenant_concurrency') ORDER BY h.workflow_id LIMIT 1)
    UNION ALL
      SELECT (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason IN ('tenant_share', 'tenant_concurrency') AND h.workflow_id > w.workflow_id
        ORDER BY h.workflow_id LIMIT 1)
      FROM wfs w WHERE w.workflow_id IS NOT NULL
  ), picked AS (
    SELECT c.id FROM wfs w CROSS JOIN LATERAL (
      SELECT h.id, h.priority, h.since, row_number() OVER (ORDER BY h.priority, h.since) AS turn
      FROM held_steps h WHERE h.tenant_id = p_tenant AND h.workflow_id = w.workflow_id AND h.reason IN ('tenant_share', 'tenant_concurrency')
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

-- +goose Down
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
CREATE OR REPLACE FUNCTION sluice_release_key(p_tenant character varying, p_workflow character varying, p_env character varying, p_key character varying,
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

DROP FUNCTION sluice_release_runs(character varying, timestamptz, boolean);
DROP FUNCTION sluice_runs_active(character varying, integer);
