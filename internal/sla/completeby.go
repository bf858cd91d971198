package sla

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
)

// completeBy: at each instant P of the objective's cron (in its time
// zone), every live run of the scope created since the previous instant
// must have succeeded by P. Each instant is judged once, by the first
// window evaluation after it: a marker row in sla_breaches (no run, the
// subject "<policy>@<instant>") written in the same transaction as the
// verdict makes a second evaluation, in whichever worker, skip it. Only
// the latest instant is judged (instants missed while no worker ran are
// not), and only instants after the policy's last change. A breach opens
// or joins the objective's incident; a later instant met resolves it.

// completeByLookback bounds the search for the previous instants.
const completeByLookback = 32 * 24 * time.Hour

// CompleteByAggregateSQL counts a tenant's live runs created in [$2, $3),
// and those of them that succeeded by $3, per workflow and environment.
const CompleteByAggregateSQL = `SELECT workflow_id, environment_id, count(*),
	count(*) FILTER (WHERE status = 'succeeded' AND finished_at <= $3)
	FROM runs WHERE tenant_id = $1 AND mode = 'live' AND created_at >= $2 AND created_at < $3
	GROUP BY workflow_id, environment_id`

// instants returns the latest instant of o at or before now and the one
// before it (zero when none within the lookback).
func instants(o *slaspec.Deadline, now time.Time) (prev, last time.Time, ok bool) {
	sched, err := slaspec.ParseCron(o.Cron)
	if err != nil {
		return prev, last, false
	}
	loc, err := slaspec.LoadZone(o.TimeZone)
	if err != nil {
		return prev, last, false
	}
	t := now.Add(-completeByLookback).In(loc)
	for {
		n := sched.Next(t)
		if n.IsZero() || n.After(now) {
			break
		}
		prev, last, ok = last, n, true
		t = n
	}
	return prev.UTC(), last.UTC(), ok
}

// evaluateCompleteBy judges the latest instant of each completeBy
// objective not judged yet, in c's tenant transaction.
func (s *Service) evaluateCompleteBy(ctx context.Context, c *ent.Client, q store.Querier, tenantID string, policies []*ent.SLAPolicy, now time.Time, rep *WindowReport) error {
	for _, p := range policies {
		o := p.Objectives.CompleteBy
		if o == nil {
			continue
		}
		prev, at, ok := instants(o, now)
		if !ok || !at.After(p.UpdatedAt) {
			continue
		}
		if prev.IsZero() {
			prev = at.Add(-completeByLookback)
		}
		subject := p.ID + "@" + at.Format(time.RFC3339)
		var judged bool
		if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sla_breaches WHERE tenant_id = $1 AND run_id = '' AND objective = $2 AND subject = $3)`,
			tenantID, slaspec.CompleteBy, subject).Scan(&judged); err != nil {
			return fmt.Errorf("completeBy marker: %w", err)
		}
		if judged {
			continue
		}
		rows, err := q.Query(ctx, CompleteByAggregateSQL, tenantID, prev, at)
		if err != nil {
			return fmt.Errorf("completeBy aggregate: %w", err)
		}
		var runs, ok2 int64
		for rows.Next() {
			var wf, env string
			var n, good int64
			if err := rows.Scan(&wf, &env, &n, &good); err != nil {
				rows.Close()
				return err
			}
			if src := Resolve(policies, wf, env).Sources[slaspec.CompleteBy]; src != nil && src.ID == p.ID {
				runs += n
				ok2 += good
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rep.Evaluated++
		details := map[string]any{"instant": at.Format(time.RFC3339), "since": prev.Format(time.RFC3339), "runs": runs, "succeeded": ok2}
		if ok2 < runs || (runs == 0 && o.RequireRun) {
			rep.Breached++
			if _, err := s.record(ctx, c, tenantID, breach{policy: p, objective: slaspec.CompleteBy, subject: subject, details: details}, now); err != nil {
				return err
			}
			continue
		}
		// Met: mark the instant judged, and resolve an open incident of
		// an earlier instant.
		if _, err := c.ExecContext(ctx, `INSERT INTO sla_breaches (id, tenant_id, created_at, run_id, objective, subject, incident_id, policy_id, details)
			VALUES ($1, $2, $3, '', $4, $5, '', $6, $7) ON CONFLICT (tenant_id, run_id, objective, subject) DO NOTHING`,
			ids.New(ids.SLABreach), tenantID, now, slaspec.CompleteBy, subject, p.ID, jsonOf(details)); err != nil {
			return fmt.Errorf("completeBy marker: %w", err)
		}
		inc, err := openIncident(ctx, c, IncidentKey(p, slaspec.CompleteBy))
		if err != nil {
			return err
		}
		if inc != nil && inc.Status != incident.StatusResolved {
			note := "the next deadline was met"
			if _, err := s.resolve(ctx, c, tenantID, inc, "sluice", &note); err != nil {
				return err
			}
			if err := audit.Record(ctx, c, "incident.resolve", "Incident", inc.ID, map[string]any{"auto": true}); err != nil {
				return err
			}
			rep.Resolved++
		}
	}
	return nil
}
