package runs

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The tenant's cap on runs. A tenant whose plan has maxConcurrentRuns
// (tenants.max_concurrent_runs) has at most that many active runs: runs that
// are unfinished (queued, running or waiting) and not waiting for a
// run-level limit (their concurrency key, or this cap). Every run counts,
// sandbox replays and evaluations' examples too (they use workers like any
// other run), except child runs (a workflow step's): they run in their
// parent's place, so they neither count nor wait (a parent waiting for a
// child held behind it would never finish). A paused run counts: it is
// unfinished.
//
// createRun decides after the run's concurrency key (a run held for its key
// is not active): under the tenant's runs lock (sluice_runs_active,
// migration 20261128114900_run_cap_rls) it counts the active runs, at most
// cap of them; at the cap the run is created queued with its first steps
// held (held_steps reason tenant_runs, ready_at NULL, no task), and
// Run.queueReason is TENANT_CONCURRENCY since the run's creation.
//
// When a run of a capped tenant finishes, the transaction that finishes it
// releases the oldest waiting runs (by priority, then age) that fit
// (sluice_release_runs) and sends their steps with its own. It does not
// wait for the tenant's lock: when a start holds it, or the transaction is
// lost, the sweep (ReleaseRuns, run by internal/dispatch for every tenant
// with held steps) releases them; the sweep also applies a cap raised or
// removed by a manifest. A concurrency key's release (sluice_release_key)
// checks the cap too: a run its key lets go while the tenant is at its cap
// stays held, now for the tenant (its rows' reason becomes tenant_runs).
//
// What it costs: startRun reads the cap with the deployment (one more
// column, no statement); a capped tenant's start adds one statement
// (sluice_runs_active). lockRunSQL reads whether the tenant is capped, so a
// run's finish adds one statement (sluice_release_runs) for a capped tenant
// and none otherwise.

// capValue is a nullable max_concurrent_runs as createRun takes it (0: no cap).
func capValue(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// tenantRunCap is the cap on runs that applies to the new run r: 0 for a
// child run or a tenant without a cap. startRun read it already; other
// starts (replays, sandbox replays) read it here.
func (e *Service) tenantRunCap(ctx context.Context, r *ent.Run, nr newRun) (int, error) {
	if nr.parentRunID != nil {
		return 0, nil
	}
	if nr.runCapRead {
		return nr.runCap, nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, err
	}
	var limit *int
	if err := q.QueryRow(ctx, `SELECT max_concurrent_runs FROM tenants WHERE id = $1`, r.TenantID).Scan(&limit); err != nil {
		return 0, fmt.Errorf("tenant's cap on runs: %w", err)
	}
	return capValue(limit), nil
}

// decideRunCap applies the tenant's cap (runCap, 0 for none) to the new run
// r under the tenant's runs lock, held until the transaction ends:
// tenantHold at the cap, keyStart otherwise.
func (e *Service) decideRunCap(ctx context.Context, r *ent.Run, runCap int) (keyDecision, error) {
	if runCap <= 0 {
		return keyStart, nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, err
	}
	var active int
	if err := q.QueryRow(ctx, `SELECT sluice_runs_active($1, $2)`, r.TenantID, runCap).Scan(&active); err != nil {
		return 0, fmt.Errorf("tenant's cap on runs: %w", err)
	}
	if active < runCap {
		return keyStart, nil
	}
	return tenantHold, nil
}

// releaseRuns releases, in the transaction of a run of a capped tenant that
// finished, the oldest runs waiting for the tenant's cap that fit, and adds
// their step tasks to the flush. A child run never counted, so it releases
// none.
func (s *runState) releaseRuns(ctx context.Context) error {
	if !s.runCapped || s.run.ParentRunID != nil {
		return nil
	}
	ts, err := s.e.releaseRuns(ctx, s.run.TenantID, false)
	if err != nil {
		return err
	}
	s.tasks = append(s.tasks, ts...)
	return nil
}

// releaseRuns runs sluice_release_runs in the transaction in ctx and returns
// the released steps' tasks (to send after commit).
func (e *Service) releaseRuns(ctx context.Context, tenantID string, wait bool) ([]tasks.Task, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	ts, err := releasedTasks(ctx, q, e.now(), tenantID,
		`SELECT run_id, step_id, step_type, attempt_id, version_id FROM sluice_release_runs($1, $2, $3)`, tenantID, e.now(), wait)
	if err != nil {
		return nil, fmt.Errorf("release runs waiting for the tenant's cap: %w", err)
	}
	if e.metrics != nil && len(ts) > 0 {
		e.metrics.releasedSteps(len(ts))
	}
	return ts, nil
}

// ReleaseRuns is the sweep of a tenant's runs waiting for its cap on runs:
// in a transaction of its own, waiting for the tenant's runs lock, it
// releases the oldest that fit (all of them when the cap was removed) and
// sends them once it commits. It returns how many steps it released.
func (e *Service) ReleaseRuns(ctx context.Context, tenantID string) (int, error) {
	n := 0
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), e.client, func(ctx context.Context) error {
		ts, err := e.releaseRuns(ctx, tenantID, true)
		if err != nil {
			return err
		}
		n = len(ts)
		e.dispatchAfterCommit(ctx, ts)
		return nil
	})
	return n, err
}
