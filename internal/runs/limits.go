package runs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Named concurrency limits (internal/limits). A step that names a limit
// (`limit: "crm-api"`, http and llm steps) is checked at its claim, like
// a capped tenant's steps: sluice_claim_limit (migration
// 20261128115000_named_limits_rls) takes the lock of (tenant, limit name),
// counts the name's busy steps, that is its running steps and the steps
// released for it that no worker has claimed yet (step_runs.limit_name,
// set at the claim and by a release), and either lets the step start (its
// claim stores the name on the step run) or holds it: ready_at NULL, no
// task, a held_steps row with reason named_limit and the name. A step that
// has never been held also waits while older steps are held for the name,
// so the held ones keep their turn.
//
// When a step with a limit leaves running (or a released step is
// cancelled before it starts), the transaction that moves it releases the
// name's oldest held steps that fit (sluice_release_limit, not waiting for
// the name's lock) and sends them after commit. When the lock is taken, or
// the transaction is lost, the Releaser is asked after commit and the
// dispatch sweep (ReleaseLimits) recovers the name. Held rows of steps that
// no longer wait (their run was cancelled) go at the name's next release.
// Waiting steps (approvals, delays, retries' backoff) hold no slot.
//
// A limit that does not exist (deleted since the version was deployed)
// limits nothing. Only steps that name a limit pay: one statement at their
// claim and one when they leave running.

// LimitReleaser is what a Releaser may also do: release, after commit, the
// named limits of a tenant whose release found the name's lock taken.
type LimitReleaser interface {
	ReleaseLimits(tenantID string)
}

// limitOf is the named limit step stepID of the run's version names, or "".
func (s *runState) limitOf(stepID string) string {
	return s.e.limitsOf(s.run.VersionID, s.def)[stepID]
}

// limitsOf maps a version's steps that name a limit to the limit (nil
// when none does), cached by version like dependentsOf.
func (e *Service) limitsOf(versionID string, def *definition.Definition) map[string]string {
	if m, ok := e.stepLimits.Load(versionID); ok {
		return m.(map[string]string)
	}
	var m map[string]string
	for _, st := range def.Steps {
		if st.Limit != "" {
			if m == nil {
				m = map[string]string{}
			}
			m[st.ID] = st.Limit
		}
	}
	e.stepLimits.Store(versionID, m)
	return m
}

// claimLimit is the check of a step that names a limit before it starts:
// true when the limit has room (or does not exist); otherwise the step is
// held for the limit and false. Steps run inside their claim (sandbox
// recordings) are not limited.
func (s *runState) claimLimit(ctx context.Context, step *definition.Step, sr *ent.StepRun, pure bool) (bool, error) {
	if step.Limit == "" || pure {
		return true, nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return false, err
	}
	var free bool
	if err := q.QueryRow(ctx, `SELECT sluice_claim_limit($1, $2, $3, $4)`, s.run.TenantID, sr.ID, step.Limit, s.now).Scan(&free); err != nil {
		return false, fmt.Errorf("claim named limit %q: %w", step.Limit, err)
	}
	if !free {
		s.replaceStep(sr, changeStep().ClearReadyAt())
		if s.e.metrics != nil {
			s.e.metrics.heldSteps(1, "claim")
		}
	}
	return free, nil
}

// noteLimitLeft remembers, for the flush, the limit of a step that stopped
// holding one of its slots: it left running, or it was released and is
// cancelled before it started.
func (s *runState) noteLimitLeft(sr, updated *ent.StepRun) {
	if updated.Status == steprun.StatusRunning || (sr.Status != steprun.StatusRunning && sr.Status != steprun.StatusQueued) {
		return
	}
	if name := s.limitOf(sr.StepID); name != "" && !slices.Contains(s.limitsLeft, name) {
		s.limitsLeft = append(s.limitsLeft, name)
	}
}

// releaseLimits releases, in the flush's transaction, the steps held for
// the limits whose steps left, and adds their tasks to the flush. A limit
// whose lock is taken is left to the Releaser, asked after commit.
func (s *runState) releaseLimits(ctx context.Context) error {
	if len(s.limitsLeft) == 0 {
		return nil
	}
	names := s.limitsLeft
	s.limitsLeft = nil
	locked := false
	for _, name := range names {
		ts, ok, err := s.e.releaseLimit(ctx, s.run.TenantID, name, false)
		if err != nil {
			return err
		}
		locked = locked || !ok
		s.tasks = append(s.tasks, ts...)
	}
	if lr, isLR := s.e.releaser.(LimitReleaser); locked && isLR {
		tenantID := s.run.TenantID
		store.AfterCommit(ctx, func() { lr.ReleaseLimits(tenantID) })
	}
	return nil
}

// releaseLimit runs sluice_release_limit in the transaction in ctx and
// returns the released steps' tasks (to send after commit). ok is false
// when it did not wait for the name's lock and found it taken.
func (e *Service) releaseLimit(ctx context.Context, tenantID, name string, wait bool) (ts []tasks.Task, ok bool, err error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, false, err
	}
	now := e.now()
	// A queue task of its own: the attempt's first task may still be in
	// flight (its claim held the step moments ago), and the queue refuses
	// a second task with its id.
	ts, locked, err := releasedRows(ctx, q, now, tenantID, "l"+strconv.FormatInt(now.UnixMilli(), 36),
		`SELECT run_id, step_id, step_type, attempt_id, version_id FROM sluice_release_limit($1, $2, $3, $4)`, tenantID, name, now, wait)
	if err != nil {
		return nil, false, fmt.Errorf("release named limit %q: %w", name, err)
	}
	if e.metrics != nil && len(ts) > 0 {
		e.metrics.releasedSteps(len(ts))
	}
	return ts, !locked, nil
}

// ReleaseLimit releases, in the caller's transaction (a limit raised or
// deleted), the steps held for the named limit that fit now, waiting for
// the name's lock, and sends them after commit. It returns how many.
func (e *Service) ReleaseLimit(ctx context.Context, tenantID, name string) (int, error) {
	ts, _, err := e.releaseLimit(ctx, tenantID, name, true)
	if err != nil {
		return 0, err
	}
	e.dispatchAfterCommit(ctx, ts)
	return len(ts), nil
}

// maxLimitsPerSweep bounds the limit names one sweep of a tenant visits.
const maxLimitsPerSweep = 1000

// ReleaseLimits is the sweep of a tenant's named limits: for every name
// with held steps, in a transaction of its own, it releases the oldest
// that fit, waiting for the name's lock, and sends them once it commits.
// It recovers names whose release was lost or found the lock taken. It
// returns how many steps it released.
func (e *Service) ReleaseLimits(ctx context.Context, tenantID string) (int, error) {
	var names []string
	sys := viewer.SystemContext(ctx, tenantID)
	err := store.InTenant(sys, e.client, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT DISTINCT h.limit_name FROM held_steps h
			WHERE h.tenant_id = $1 AND h.limit_name IS NOT NULL ORDER BY 1 LIMIT $2`, tenantID, maxLimitsPerSweep)
		if err != nil {
			return fmt.Errorf("held named limits: %w", err)
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return 0, err
	}
	total := 0
	var errList []error
	for _, name := range names {
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		err := store.InTenant(sys, e.client, func(ctx context.Context) error {
			n, err := e.ReleaseLimit(ctx, tenantID, name)
			total += n
			return err
		})
		if err != nil {
			errList = append(errList, fmt.Errorf("named limit %q: %w", name, err))
		}
	}
	return total, errors.Join(errList...)
}
