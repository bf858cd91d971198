-- Hand-written: fair dispatch's release (sluice_release_held) after the
-- named limits and the tenant's run cap were both added. Each of their
-- migrations replaced the function; this one is the combination: it
-- releases only the rows fair dispatch holds itself (reasons tenant_share
-- and tenant_concurrency) and leaves the rows of a concurrency key
-- (key_concurrency), of the run cap (tenant_runs) and of a named limit
-- (named_limit) to their own releases.
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
      (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason NOT IN ('key_concurrency', 'named_limit') ORDER BY h.workflow_id LIMIT 1)
    UNION ALL
      SELECT (SELECT h.workflow_id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.reason NOT IN ('key_concurrency', 'named_limit') AND h.workflow_id > w.workflow_id
        ORDER BY h.workflow_id LIMIT 1)
      FROM wfs w WHERE w.workflow_id IS NOT NULL
  ), picked AS (
    SELECT c.id FROM wfs w CROSS JOIN LATERAL (
      SELECT h.id, h.priority, h.since, row_number() OVER (ORDER BY h.priority, h.since) AS turn
      FROM held_steps h WHERE h.tenant_id = p_tenant AND h.workflow_id = w.workflow_id AND h.reason NOT IN ('key_concurrency', 'named_limit')
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

