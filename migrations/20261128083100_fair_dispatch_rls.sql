-- Hand-written: fair dispatch (internal/runs/dispatch.go). A tenant may have
-- at most its share (the configured share times its dispatch_weight, and
-- never more than its max_concurrent_steps) of ready steps waiting in the
-- queue; the rest wait in held_steps with ready_at NULL, and are released in
-- turns (priority first, then one workflow after another, oldest first) as
-- the queue drains. A tenant with max_concurrent_steps also has its claims
-- checked against the steps it runs (sluice_claim_slot). The functions run
-- as the caller, in the caller's tenant transaction, under row-level security.
-- +goose Up
ALTER TABLE "held_steps" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "held_steps" FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON "held_steps" USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')) WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- +goose StatementBegin
CREATE FUNCTION sluice_admit_steps(p_tenant character varying, p_run character varying, p_steps character varying[], p_now timestamptz, p_share integer)
  RETURNS character varying[] LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_weight integer;
  v_hard integer;
  v_cap integer;
  v_queued integer;
  v_held character varying[];
  v_reason text := 'tenant_share';
BEGIN
  SELECT t.dispatch_weight, t.max_concurrent_steps INTO v_weight, v_hard FROM tenants t WHERE t.id = p_tenant;
  v_cap := p_share * coalesce(v_weight, 1);
  IF v_hard IS NOT NULL AND v_hard <= v_cap THEN
    v_cap := v_hard;
    v_reason := 'tenant_concurrency';
  END IF;
  SELECT count(*) INTO v_queued FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'queued'
    AND s.ready_at <= p_now AND NOT (s.run_id = p_run AND s.step_id = ANY (p_steps)) LIMIT v_cap) q;
  IF v_cap - v_queued >= cardinality(p_steps) THEN
    RETURN '{}';
  END IF;
  v_held := p_steps[greatest(v_cap - v_queued, 0) + 1 : cardinality(p_steps)];
  WITH held AS (
    UPDATE step_runs s SET ready_at = NULL
    WHERE s.tenant_id = p_tenant AND s.run_id = p_run AND s.step_id = ANY (v_held) AND s.status = 'queued'
    RETURNING s.id, s.step_id
  )
  INSERT INTO held_steps (id, tenant_id, run_id, step_id, workflow_id, priority, reason, since)
  SELECT h.id, p_tenant, p_run, h.step_id, r.workflow_id, r.priority, v_reason, p_now
  FROM held h CROSS JOIN runs r WHERE r.id = p_run
  ON CONFLICT (id) DO NOTHING;
  RETURN v_held;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_claim_slot(p_tenant character varying, p_step_run character varying, p_now timestamptz)
  RETURNS boolean LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_hard integer;
  v_running integer;
BEGIN
  SELECT t.max_concurrent_steps INTO v_hard FROM tenants t WHERE t.id = p_tenant;
  IF v_hard IS NULL THEN
    RETURN true;
  END IF;
  -- Claims of the tenant's steps take turns until they commit, so two
  -- claims never both see the last free slot.
  PERFORM pg_advisory_xact_lock(hashtextextended('sluice:steps:' || p_tenant, 0));
  SELECT count(*) INTO v_running FROM (SELECT 1 FROM step_runs s WHERE s.tenant_id = p_tenant AND s.status = 'running'
    AND s.ready_at IS NOT NULL AND s.id <> p_step_run LIMIT v_hard) r;
  IF v_running < v_hard THEN
    RETURN true;
  END IF;
  WITH held AS (
    UPDATE step_runs s SET ready_at = NULL WHERE s.id = p_step_run AND s.status = 'queued'
    RETURNING s.id, s.run_id, s.step_id
  )
  INSERT INTO held_steps (id, tenant_id, run_id, step_id, workflow_id, priority, reason, since)
  SELECT h.id, p_tenant, h.run_id, h.step_id, r.workflow_id, r.priority, 'tenant_concurrency', p_now
  FROM held h JOIN runs r ON r.id = h.run_id
  ON CONFLICT (id) DO NOTHING;
  RETURN false;
END $$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION sluice_release_held(p_tenant character varying, p_now timestamptz, p_share integer)
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

-- The sweep visits only tenants with held steps: ids only, through this
-- function owned by the schema owner. EXECUTE is granted to the app role by
-- `sluice migrate up`.
-- +goose StatementBegin
CREATE FUNCTION sluice_held_tenant_ids() RETURNS SETOF character varying
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
  SELECT DISTINCT tenant_id FROM held_steps ORDER BY 1
$$;
-- +goose StatementEnd
REVOKE ALL ON FUNCTION sluice_held_tenant_ids() FROM PUBLIC;

-- +goose Down
DROP FUNCTION sluice_held_tenant_ids();
DROP FUNCTION sluice_release_held(character varying, timestamptz, integer);
DROP FUNCTION sluice_claim_slot(character varying, character varying, timestamptz);
DROP FUNCTION sluice_admit_steps(character varying, character varying, character varying[], timestamptz, integer);
DROP POLICY tenant_isolation ON "held_steps";
ALTER TABLE "held_steps" NO FORCE ROW LEVEL SECURITY;
ALTER TABLE "held_steps" DISABLE ROW LEVEL SECURITY;
