package sla

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The sweep is responsible for finding runs and approval requests past an
// SLA deadline while they are still open, and runs that finished past one
// (or over their cost limit) before it looked, and recording each breach
// once. It runs under store.Singleton ("sla-sweep"): one at a time across
// workers. Each tenant's batch is one transaction that records the
// breaches (a unique row per run and objective) and moves the runs'
// sla_check_at on together, so a sweep killed at any point either recorded
// a breach and moved on, or did neither; the next sweep, in whichever
// worker, picks up from Postgres.

// SweepName is the sweep's singleton (advisory lock) name.
const SweepName = "sla-sweep"

// finishedLookback is how far back the sweep reads finished runs: those
// that finished past a deadline before it saw them, and those over their
// cost limit. Runs finished while no sweep ran for longer are not judged.
func (s *Service) finishedLookback() time.Duration {
	return max(2*time.Minute, 6*s.o.SweepInterval)
}

// SweepReport counts what one sweep did.
type SweepReport struct {
	Tenants  int
	Runs     int // runs judged
	Breaches int // breaches recorded
}

// Sweep visits every tenant once. It does not take the singleton lock
// (RunSweeper does); tests and the benchmark call it directly.
func (s *Service) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return rep, err
	}
	var errs []error
	for _, tid := range tenants {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		rep.Tenants++
		for range 20 { // bounded batches per tenant and sweep
			full, err := s.sweepTenant(ctx, tid, &rep)
			if err != nil {
				errs = append(errs, fmt.Errorf("tenant %s: %w", tid, err))
				break
			}
			if !full {
				break
			}
		}
	}
	return rep, errors.Join(errs...)
}

// slaRun is a run as the sweep reads it.
type slaRun struct {
	id, workflowID, environmentID, status string
	created                               time.Time
	started, finished                     *time.Time
	deadline, queueDeadline, checkAt      *time.Time
	cost                                  int64
	maxCost                               *int64
}

const slaRunColumns = `id, workflow_id, environment_id, status, created_at, started_at, finished_at,
	sla_deadline_at, sla_queue_deadline_at, sla_check_at, cost_micro_usd, sla_max_cost_micro_usd`

// DueRunsSQL reads a tenant's unfinished runs with a deadline due ($1
// tenant, $2 now, $3 limit), through the partial index
// run_tenant_id_sla_check_at.
const DueRunsSQL = `SELECT ` + slaRunColumns + ` FROM runs
	WHERE tenant_id = $1 AND sla_check_at IS NOT NULL AND sla_check_at <= $2
	AND (status = 'queued' OR status = 'running' OR status = 'waiting')
	ORDER BY sla_check_at LIMIT $3`

// FinishedRunsSQL reads a tenant's live runs finished since $2 that still
// have a deadline to judge or went over their cost limit without a breach
// recorded, through run_tenant_id_finished_at.
const FinishedRunsSQL = `SELECT ` + slaRunColumns + ` FROM runs
	WHERE tenant_id = $1 AND finished_at IS NOT NULL AND mode = 'live' AND finished_at >= $2
	AND (sla_check_at IS NOT NULL
		OR (sla_max_cost_micro_usd IS NOT NULL AND cost_micro_usd > sla_max_cost_micro_usd
			AND NOT EXISTS (SELECT 1 FROM sla_breaches b WHERE b.tenant_id = runs.tenant_id AND b.run_id = runs.id AND b.objective = 'maxCostPerRun')))
	LIMIT $3`

// overdueApprovalsSQL reads pending approval requests of live runs opened
// before $2 with no maxApprovalWait breach recorded ($1 tenant, $3 limit).
const overdueApprovalsSQL = `SELECT a.id, a.run_id, a.created_at, r.workflow_id, r.environment_id
	FROM approval_requests a JOIN runs r ON r.id = a.run_id
	WHERE a.tenant_id = $1 AND a.status = 'pending' AND a.created_at <= $2 AND r.mode = 'live'
	AND NOT EXISTS (SELECT 1 FROM sla_breaches b WHERE b.tenant_id = $1 AND b.run_id = a.run_id AND b.objective = 'maxApprovalWait' AND b.subject = a.id)
	ORDER BY a.created_at LIMIT $3`

func scanRuns(rows pgx.Rows) ([]slaRun, error) {
	defer rows.Close()
	var out []slaRun
	for rows.Next() {
		var r slaRun
		if err := rows.Scan(&r.id, &r.workflowID, &r.environmentID, &r.status, &r.created, &r.started, &r.finished,
			&r.deadline, &r.queueDeadline, &r.checkAt, &r.cost, &r.maxCost); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// sweepTenant sweeps one batch of a tenant in one transaction; full says
// a batch was full (there may be more).
//
// Its reads go in one round trip (with the transaction's BEGIN): the
// tenant's sla_version, the due runs, and, when the tenant's policies as
// last cached have the objectives that need them, the recently finished
// runs and the overdue approvals. Only when the version shows the cache
// stale are the policies read again and the conditional reads sent then.
func (s *Service) sweepTenant(ctx context.Context, tenantID string, rep *SweepReport) (full bool, err error) {
	now := s.now()
	err = store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		cached, cachedVersion, haveCache := s.cachedPolicies(tenantID)
		reads := s.planReads(cached, haveCache, now)
		b := &pgx.Batch{}
		b.Queue(`SELECT sla_version FROM tenants WHERE id = $1`, tenantID)
		b.Queue(DueRunsSQL, tenantID, now, s.o.Batch)
		reads.queue(b, tenantID, s.o.Batch)
		br := q.SendBatch(ctx, b)
		var version int64
		var list, finished []slaRun
		var approvals []overdueApproval
		err = func() error {
			defer br.Close()
			if err := br.QueryRow().Scan(&version); err != nil {
				return fmt.Errorf("read sla version: %w", err)
			}
			rows, err := br.Query()
			if err != nil {
				return fmt.Errorf("due runs: %w", err)
			}
			if list, err = scanRuns(rows); err != nil {
				return fmt.Errorf("due runs: %w", err)
			}
			return reads.scan(br, &finished, &approvals)
		}()
		if err != nil {
			return err
		}
		policies := cached
		if !haveCache || version != cachedVersion {
			if policies, err = s.tenantPolicies(ctx, c, tenantID, version); err != nil {
				return err
			}
			if again := s.planReads(policies, true, now); again != reads {
				// The policies changed since they were cached: the
				// conditional reads again, as they now are.
				finished, approvals = nil, nil
				b := &pgx.Batch{}
				again.queue(b, tenantID, s.o.Batch)
				if b.Len() > 0 {
					br := q.SendBatch(ctx, b)
					err := again.scan(br, &finished, &approvals)
					if cerr := br.Close(); err == nil {
						err = cerr
					}
					if err != nil {
						return err
					}
				}
			}
		}
		full = len(list) == s.o.Batch || len(finished) == s.o.Batch || len(approvals) == s.o.Batch
		list = append(list, finished...)
		var moveIDs []string
		var moveTo []*time.Time
		for _, r := range list {
			eff := Resolve(policies, r.workflowID, r.environmentID)
			for _, b := range judgeRun(r, eff, now) {
				ok, err := s.record(ctx, c, tenantID, b, now)
				if err != nil {
					return err
				}
				if ok {
					rep.Breaches++
				}
			}
			rep.Runs++
			if r.checkAt != nil {
				moveIDs = append(moveIDs, r.id)
				moveTo = append(moveTo, nextCheck(r, now))
			}
		}
		if len(moveIDs) > 0 {
			// Runs a step's transaction holds are skipped (their check
			// time stays; the next sweep reads them again and finds their
			// breaches recorded): the sweep never waits for the state
			// machine, nor deadlocks with a group commit holding several.
			if _, err := q.Exec(ctx, `UPDATE runs SET sla_check_at = t.at FROM unnest($2::text[], $3::timestamptz[]) AS t(id, at)
				WHERE runs.tenant_id = $1 AND runs.id = t.id
				AND runs.id IN (SELECT id FROM runs WHERE tenant_id = $1 AND id = ANY($2) FOR UPDATE SKIP LOCKED)`, tenantID, moveIDs, moveTo); err != nil {
				return fmt.Errorf("move sla_check_at: %w", err)
			}
		}
		return s.recordApprovals(ctx, c, tenantID, policies, approvals, now, rep)
	})
	return full, err
}

// sweepReads are the sweep's reads that depend on a tenant's objectives.
type sweepReads struct {
	finished     bool      // some policy has a per-run objective judged at finish
	finishedFrom time.Time // lookback start
	approvals    bool      // some policy has maxApprovalWait
	openedBefore time.Time // now - the shortest maxApprovalWait
}

// planReads decides the conditional reads from policies; without a cached
// set (known false) it plans none, and the caller reads the policies first.
func (s *Service) planReads(policies []*ent.SLAPolicy, known bool, now time.Time) sweepReads {
	var r sweepReads
	if !known {
		return r
	}
	if anySet(policies, slaspec.MaxDuration, slaspec.MaxQueueDelay, slaspec.MaxCostPerRun) {
		r.finished, r.finishedFrom = true, now.Add(-s.finishedLookback())
	}
	if w, ok := minApprovalWait(policies); ok {
		r.approvals, r.openedBefore = true, now.Add(-w)
	}
	return r
}

func (r sweepReads) queue(b *pgx.Batch, tenantID string, limit int) {
	if r.finished {
		b.Queue(FinishedRunsSQL, tenantID, r.finishedFrom, limit)
	}
	if r.approvals {
		b.Queue(overdueApprovalsSQL, tenantID, r.openedBefore, limit)
	}
}

func (r sweepReads) scan(br pgx.BatchResults, finished *[]slaRun, approvals *[]overdueApproval) error {
	if r.finished {
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("finished runs: %w", err)
		}
		if *finished, err = scanRuns(rows); err != nil {
			return fmt.Errorf("finished runs: %w", err)
		}
	}
	if r.approvals {
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("overdue approvals: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var a overdueApproval
			if err := rows.Scan(&a.id, &a.runID, &a.created, &a.workflowID, &a.environmentID); err != nil {
				return err
			}
			*approvals = append(*approvals, a)
		}
		return rows.Err()
	}
	return nil
}

// overdueApproval is a pending approval request as the sweep reads it.
type overdueApproval struct {
	id, runID, workflowID, environmentID string
	created                              time.Time
}

// anySet reports whether some policy sets one of the objectives.
func anySet(policies []*ent.SLAPolicy, names ...string) bool {
	for _, p := range policies {
		for _, n := range names {
			if p.Objectives.Has(n) {
				return true
			}
		}
	}
	return false
}

func minApprovalWait(policies []*ent.SLAPolicy) (time.Duration, bool) {
	var d time.Duration
	found := false
	for _, p := range policies {
		if o := p.Objectives.MaxApprovalWait; o != nil {
			w := slaspec.MustDuration(o.Duration)
			if !found || w < d {
				d, found = w, true
			}
		}
	}
	return d, found
}

// due reports whether deadline d is to be judged now: not judged before
// (at or after the run's check time) and passed.
func due(d, checkAt *time.Time, now time.Time) bool {
	return d != nil && checkAt != nil && !d.Before(*checkAt) && !d.After(now)
}

// judgeRun returns the breaches of a run read by the sweep. Its deadlines
// were fixed when it started; the policy an objective is reported under is
// the one in force now (an objective no policy sets any more is not
// reported).
func judgeRun(r slaRun, eff Effective, now time.Time) []breach {
	var out []breach
	end := now
	if r.finished != nil {
		end = *r.finished
	}
	if due(r.queueDeadline, r.checkAt, now) && eff.Sources[slaspec.MaxQueueDelay] != nil {
		first := end
		if r.started != nil {
			first = *r.started
		}
		if first.After(*r.queueDeadline) {
			out = append(out, breach{policy: eff.Sources[slaspec.MaxQueueDelay], objective: slaspec.MaxQueueDelay, runID: r.id,
				details: map[string]any{"deadline": r.queueDeadline.Format(time.RFC3339Nano), "limit": eff.Objectives.MaxQueueDelay.Duration, "runStatus": r.status}})
		}
	}
	if due(r.deadline, r.checkAt, now) && eff.Sources[slaspec.MaxDuration] != nil && end.After(*r.deadline) {
		out = append(out, breach{policy: eff.Sources[slaspec.MaxDuration], objective: slaspec.MaxDuration, runID: r.id,
			details: map[string]any{"deadline": r.deadline.Format(time.RFC3339Nano), "limit": eff.Objectives.MaxDuration.Duration, "runStatus": r.status}})
	}
	if r.finished != nil && r.maxCost != nil && r.cost > *r.maxCost && eff.Sources[slaspec.MaxCostPerRun] != nil {
		out = append(out, breach{policy: eff.Sources[slaspec.MaxCostPerRun], objective: slaspec.MaxCostPerRun, runID: r.id,
			details: map[string]any{"costMicroUSD": r.cost, "limitMicroUSD": *r.maxCost}})
	}
	return out
}

// nextCheck is the run's next sla_check_at: its earliest deadline not yet
// judged and still ahead, or nil (also once it finished: everything due
// was judged with its finish time).
func nextCheck(r slaRun, now time.Time) *time.Time {
	if r.finished != nil {
		return nil
	}
	var next *time.Time
	for _, d := range []*time.Time{r.queueDeadline, r.deadline} {
		if d == nil || !d.After(now) || (r.checkAt != nil && d.Before(*r.checkAt)) {
			continue
		}
		if d == r.queueDeadline && r.started != nil {
			continue // started: the queue deadline can no longer be missed
		}
		if next == nil || d.Before(*next) {
			next = d
		}
	}
	return next
}

// recordApprovals records the maxApprovalWait breaches of pending
// approval requests read by the sweep.
func (s *Service) recordApprovals(ctx context.Context, c *ent.Client, tenantID string, policies []*ent.SLAPolicy, list []overdueApproval, now time.Time, rep *SweepReport) error {
	for _, a := range list {
		eff := Resolve(policies, a.workflowID, a.environmentID)
		o := eff.Objectives.MaxApprovalWait
		if o == nil || now.Sub(a.created) < slaspec.MustDuration(o.Duration) {
			continue
		}
		ok, err := s.record(ctx, c, tenantID, breach{policy: eff.Sources[slaspec.MaxApprovalWait], objective: slaspec.MaxApprovalWait,
			runID: a.runID, subject: a.id, details: map[string]any{"approvalID": a.id, "openedAt": a.created.Format(time.RFC3339Nano), "limit": o.Duration}}, now)
		if err != nil {
			return err
		}
		if ok {
			rep.Breaches++
		}
	}
	return nil
}

// RunSweeper sweeps every SweepInterval until ctx ends, under the
// singleton lock: while another worker holds it, this one waits its turn.
func (s *Service) RunSweeper(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, SweepName, s.log, func() time.Duration { return s.o.SweepInterval }, func(ctx context.Context) error {
		_, err := s.Sweep(ctx)
		return err
	})
}
