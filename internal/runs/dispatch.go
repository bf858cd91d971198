package runs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Fair dispatch. The step queue is first in, first out: a tenant that makes
// 10,000 steps ready at once would put every other tenant's next step behind
// them. So a tenant may have at most its share of ready steps waiting in the
// queue (Options.DispatchShare times its plan's weight, and never more than
// its plan's maxConcurrentSteps); the steps beyond it wait in Postgres, in
// held_steps with their ready_at cleared, and are released in turns as the
// queue drains: by priority, then one workflow after another, oldest first.
// A tenant that has nothing waiting gets its next step into the queue at once,
// behind at most the other tenants' shares. Splitting work over workflows or
// keys never enlarges a tenant's share, which is counted per tenant.
//
// Everything that decides is in Postgres (the SQL functions of migration
// 20261128083100_fair_dispatch_rls): a crash or a Redis wipe loses no held step,
// and no slot is held by anything but a step row in a state that holds it
// (queued and due, or running). Waiting steps (approvals, delays, rate
// limits, credentials, retries' backoff) hold none.
//
// Where it happens:
//   - admission (flush): the step tasks a transaction would send go through
//     sluice_admit_steps, in the batch of the transaction's held writes, so
//     it costs no round trip; a run's next step run back to back by the same
//     worker (a continuation) takes over its predecessor's place and is not
//     checked;
//   - claims of a capped tenant's steps (claimStep): sluice_claim_slot
//     counts the tenant's running steps under a lock of the tenant, and holds
//     the step when all its slots are taken;
//   - release (ReleaseHeld): after a step transaction of a tenant that has
//     held steps (lockRunSQL says so) the service asks its Releaser, and
//     every worker sweeps the tenants with held steps (HeldTenants) as a
//     safety net.

// dispatchFlags are lockRunSQL's columns for dispatch: whether the tenant
// caps its running steps, whether it has held steps that fair dispatch
// releases (rows held for a run-level limit wait for that limit's release,
// so they ask for none; the partial index heldstep_dispatchable answers
// without visiting them), and whether it caps its unfinished runs
// (runcap.go).
const dispatchFlags = `(SELECT max_concurrent_steps IS NOT NULL FROM tenants WHERE id = runs.tenant_id),
		EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = runs.tenant_id AND (h.reason = 'tenant_share' OR h.reason = 'tenant_concurrency')),
		(SELECT max_concurrent_runs IS NOT NULL FROM tenants WHERE id = runs.tenant_id)`

// Releaser is told, after commit, about tenants that have held steps and
// may have room for them (internal/dispatch runs ReleaseHeld for them).
type Releaser interface {
	Release(tenantID string)
}

// SetReleaser sets the service's Releaser (workers; nil: none).
func (e *Service) SetReleaser(r Releaser) { e.releaser = r }

// DispatchShare is the share of ready steps a tenant of weight 1 may have
// in the queue (Options.DispatchShare); 0 when fair dispatch is off.
func (e *Service) DispatchShare() int { return e.share }

// admit sends the ready step tasks of a flush through the tenant's share:
// those beyond it are held in Postgres (ready_at cleared, a held_steps row)
// and dropped from the flush's tasks. It runs in the flush's transaction.
func (s *runState) admit(ctx context.Context) error {
	if s.e.share <= 0 {
		return nil
	}
	var ids []string
	for _, t := range s.tasks {
		if t.Kind == tasks.KindStep && t.Variant == "" && !t.At.After(s.now) && t.RunID == s.run.ID {
			ids = append(ids, t.StepID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	var held []string
	if err := q.QueryRow(ctx, `SELECT sluice_admit_steps($1, $2, $3, $4, $5)`, s.run.TenantID, s.run.ID, ids, s.now, s.e.share).Scan(&held); err != nil {
		return fmt.Errorf("admit steps: %w", err)
	}
	if len(held) == 0 {
		return nil
	}
	s.tasks = slices.DeleteFunc(s.tasks, func(t tasks.Task) bool {
		return t.Kind == tasks.KindStep && t.RunID == s.run.ID && t.Variant == "" && slices.Contains(held, t.StepID)
	})
	for _, id := range held {
		if sr := s.steps[id]; sr != nil {
			s.replaceStep(sr, changeStep().ClearReadyAt())
		}
	}
	s.tenantHeld = true
	if s.e.metrics != nil {
		s.e.metrics.heldSteps(len(held), "admission")
	}
	return nil
}

// claimSlot is a capped tenant's check before its step starts: true when
// fewer than maxConcurrentSteps of its steps run; otherwise the step is
// held (sluice_claim_slot) and false.
func (s *runState) claimSlot(ctx context.Context, sr *ent.StepRun) (bool, error) {
	if !s.capped {
		return true, nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return false, err
	}
	var free bool
	if err := q.QueryRow(ctx, `SELECT sluice_claim_slot($1, $2, $3)`, s.run.TenantID, sr.ID, s.now).Scan(&free); err != nil {
		return false, fmt.Errorf("claim slot: %w", err)
	}
	if !free {
		s.replaceStep(sr, changeStep().ClearReadyAt())
		s.tenantHeld = true
		if s.e.metrics != nil {
			s.e.metrics.heldSteps(1, "claim")
		}
	}
	return free, nil
}

// askRelease tells the Releaser, after commit, that the run's tenant has
// held steps.
func (s *runState) askRelease(ctx context.Context) {
	if !s.tenantHeld || s.e.releaser == nil {
		return
	}
	tenantID, r := s.run.TenantID, s.e.releaser
	store.AfterCommit(ctx, func() { r.Release(tenantID) })
}

// ReleaseHeld releases, in a transaction of its own, the tenant's held
// steps that fit in its share and slots now, and sends them once it
// commits. It returns how many it released.
func (e *Service) ReleaseHeld(ctx context.Context, tenantID string) (int, error) {
	share := e.share
	if share <= 0 {
		// Fair dispatch off: only a tenant's cap on running steps holds.
		share = 1 << 20
	}
	var ts []tasks.Task
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), e.client, func(ctx context.Context) error {
		ts = ts[:0]
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		// A step held at its claim (tenant_concurrency) is released while
		// the delivery that was held may still be in the queue's hands
		// (finishing), and the queue refuses a task id it holds: released
		// steps get a task id of their own, as named limits' do.
		now := e.now()
		ts, _, err = releasedRows(ctx, q, now, tenantID, "h"+strconv.FormatInt(now.UnixMilli(), 36),
			`SELECT run_id, step_id, step_type, attempt_id, version_id FROM sluice_release_held($1, $2, $3)`, tenantID, now, share)
		if err != nil {
			return fmt.Errorf("release held steps: %w", err)
		}
		e.dispatchAfterCommit(ctx, ts)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if e.metrics != nil && len(ts) > 0 {
		e.metrics.releasedSteps(len(ts))
	}
	return len(ts), nil
}

// HeldTenants lists the tenants that have held steps (a function that sees
// past row-level security: the sweep's list, no tenant's data).
func (e *Service) HeldTenants(ctx context.Context) ([]string, error) {
	return store.TenantIDsOf(ctx, e.client, store.TenantsHolding)
}

// releasedTasks runs sql, a release function returning (run_id, step_id,
// step_type, attempt_id, version_id) rows, and makes the step tasks that
// send what it released; rows without an attempt are left out.
func releasedTasks(ctx context.Context, q store.Querier, now time.Time, tenantID, sql string, args ...any) ([]tasks.Task, error) {
	ts, _, err := releasedRows(ctx, q, now, tenantID, "", sql, args...)
	return ts, err
}

// releasedRows is releasedTasks for release functions that also say when
// they found their lock taken (a row whose run_id is NULL: locked), with the
// tasks' Variant (empty: the attempt's own task id).
func releasedRows(ctx context.Context, q store.Querier, now time.Time, tenantID, variant, sql string, args ...any) (ts []tasks.Task, locked bool, err error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, false, err
	}
	ts, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Task, error) {
		var runID, stepID, typ, attemptID, versionID *string
		if err := r.Scan(&runID, &stepID, &typ, &attemptID, &versionID); err != nil {
			return tasks.Task{}, err
		}
		if runID == nil {
			locked = true
			return tasks.Task{}, nil
		}
		if attemptID == nil {
			return tasks.Task{}, nil
		}
		t := stepTask(tenantID, *runID, *stepID, *typ, *attemptID, now)
		t.VersionID = *versionID
		t.Variant = variant
		return t, nil
	})
	if err != nil {
		return nil, false, err
	}
	ts = slices.DeleteFunc(ts, func(t tasks.Task) bool { return t.ID == "" })
	checkFirstPerRun(ts)
	return ts, locked, nil
}
