-- Hand-written: named concurrency limits (internal/limits, internal/runs/limits.go).
-- concurrency_limits is tenant data under RLS. A step that names a limit
-- is checked at its claim (sluice_claim_limit): under the lock of (tenant,
-- name) the name's busy steps are counted (running, or released and not
-- yet claimed: step_runs.limit_name with status queued and due); at the
-- limit, or while older steps wait for the name, the step is held
-- (held_steps reason named_limit with the name, ready_at NULL). A step
-- that leaves running releases the name's oldest held steps that fit
-- (sluice_release_limit; the sweep waits for the lock, a finishing step
-- does not). A limit that does not exist limits nothing.
-- sluice_release_held (fair dispatch) now leaves named_limit rows alone.
-- The functions run as the caller, in the caller's tenant transaction,
-- under row-level security.
-- +goose Up
ALTER TABLE "concurrency_limits" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "concurrency_limits" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "concurrency_limits" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose StatementBegin
CREATE FUNCTION sluice_claim_limit(p_tenant character varying, p_step_run character varying, p_limit character varying, p_now timestamptz)
  RETURNS boolean LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_max integer;
  v_busy integer;
  v_turn boolean;
BEGIN
  SELECT l.max_running INTO v_max FROM concurrency_limits l WHERE l.tenant_id = p_tenant AND l.name = p_limit;
  IF v_max IS NULL THEN
    RETURN true;
  END IF;
  -- Claims and releases of one name take turns until they commit, so two
  -- claims never both see the last free slot.
  PERFORM pg_advisory_xact_lock(hashtextextended('sluice:limit:' || p_tenant || '/' || p_limit, 0));
  -- A step released for the name (or retried after running under it) has
  -- its turn; any other waits behind the steps held for the name.
  SELECT s.limit_name IS NOT NULL INTO v_turn FROM step_runs s WHERE s.id = p_step_run;
  IF coalesce(v_turn, false) OR NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = p_tenant AND h.limit_name = p_limit) THEN
    SELECT count(*) INTO v_busy FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.limit_name = p_limit
      AND (s.status = 'queued' OR s.status = 'running') AND (s.status = 'running' OR s.ready_at <= p_now) AND s.id <> p_step_run LIMIT v_max) b;
    IF v_busy < v_max THEN
      RETURN true;
    END IF;
  END IF;
  WITH held AS (
    UPDATE step_runs s SET ready_at = NULL WHERE s.id = p_step_run AND s.status = 'queued'
    RETURNING s.id, s.run_id, s.step_id
  )
  INSERT INTO held_steps (id, tenant_id, run_id, step_id, workflow_id, priority, reason, since, limit_name)
  SELECT h.id, p_tenant, h.run_id, h.step_id, r.workflow_id, r.priority, 'named_limit', p_now, p_limit
  FROM held h JOIN runs r ON r.id = h.run_id
  ON CONFLICT (id) DO NOTHING;
  RETURN false;
END $$;
-- +goose StatementEnd

-- A release that does not wait and finds the name locked returns one row
-- of NULLs: the caller asks for a release later.
-- +goose StatementBegin
CREATE FUNCTION sluice_release_limit(p_tenant character varying, p_limit character varying, p_now timestamptz, p_wait boolean)
  RETURNS TABLE (run_id character varying, step_id character varying, step_type character varying, attempt_id character varying, version_id character varying)
  LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_lock bigint := hashtextextended('sluice:limit:' || p_tenant || '/' || p_limit, 0);
  v_max integer;
  v_busy integer;
BEGIN
  IF p_wait THEN
    PERFORM pg_advisory_xact_lock(v_lock);
  ELSIF NOT pg_try_advisory_xact_lock(v_lock) THEN
    RETURN QUERY SELECT NULL::character varying, NULL::character varying, NULL::character varying, NULL::character varying, NULL::character varying;
    RETURN;
  END IF;
  -- Held rows of steps that no longer wait (their run was cancelled) go.
  DELETE FROM held_steps h WHERE h.tenant_id = p_tenant AND h.limit_name = p_limit
    AND NOT EXISTS (SELECT 1 FROM step_runs s WHERE s.id = h.id AND s.status = 'queued' AND s.ready_at IS NULL);
  SELECT l.max_running INTO v_max FROM concurrency_limits l WHERE l.tenant_id = p_tenant AND l.name = p_limit;
  IF v_max IS NULL THEN
    -- Deleted: its steps run unlimited.
    v_max := 2147483647;
  END IF;
  SELECT count(*) INTO v_busy FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.limit_name = p_limit
    AND (s.status = 'queued' OR s.status = 'running') AND (s.status = 'running' OR s.ready_at <= p_now) LIMIT v_max) b;
  IF v_busy >= v_max THEN
    RETURN;
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT h.id FROM held_steps h WHERE h.tenant_id = p_tenant AND h.limit_name = p_limit
    ORDER BY h.priority, h.since, h.id
    LIMIT v_max - v_busy
  ), gone AS (
    DELETE FROM held_steps h USING picked p WHERE h.id = p.id RETURNING h.id
  )
  UPDATE step_runs s SET ready_at = p_now, limit_name = p_limit FROM gone g
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
DROP FUNCTION sluice_release_limit(character varying, character varying, timestamptz, boolean);
DROP FUNCTION sluice_claim_limit(character varying, character varying, character varying, timestamptz);
DROP POLICY tenant_isolation ON "concurrency_limits";
ALTER TABLE "concurrency_limits" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "concurrency_limits" DISABLE ROW LEVEL SECURITY;
