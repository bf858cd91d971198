package control

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// BacklogRow is the unfinished work of one workflow in one environment.
type BacklogRow struct {
	WorkflowID, EnvironmentID            string
	RunsQueued, RunsRunning, RunsWaiting int64
	// StepsReady are steps due to start (queued, their time come) that no
	// worker has started yet; OldestReadyAt is when the longest-waiting one
	// became due.
	StepsReady    int64
	OldestReadyAt *time.Time
	// ApprovalsOpen are approvals waiting for a decision; OldestApprovalAt
	// is when the oldest opened.
	ApprovalsOpen    int64
	OldestApprovalAt *time.Time
	// StepsHeld are ready steps flow control holds in Postgres (held_steps:
	// fair dispatch, the plan's cap, a concurrency key, a named limit);
	// Held breaks them down by reason.
	StepsHeld int64
	Held      []HeldCount
}

// HeldCount is how many of a group's steps are held for one reason
// (held_steps.reason: tenant_share, tenant_concurrency, key_concurrency,
// named_limit, ...), and since when the longest-held one is.
type HeldCount struct {
	Reason      string    `json:"reason"`
	Steps       int64     `json:"steps"`
	OldestSince time.Time `json:"oldest"`
}

// backlogSQL reads a tenant's backlog by workflow and environment in one
// statement: runs not finished (the runs index on (tenant_id, status,
// created_at)), steps due and not started (the step index on (tenant_id,
// status, ready_at)), approvals pending (on (tenant_id, status)), steps
// held by flow control by reason (held_steps by (tenant_id, run_id)). $2 and
// $3 filter by workflow and environment when not empty; $4 is now.
const backlogSQL = `
WITH r AS (
  SELECT workflow_id, environment_id,
         count(*) FILTER (WHERE status = 'queued')  AS queued,
         count(*) FILTER (WHERE status = 'running') AS running,
         count(*) FILTER (WHERE status = 'waiting') AS waiting
  FROM runs
  WHERE tenant_id = $1 AND status IN ('queued', 'running', 'waiting')
    AND ($2 = '' OR workflow_id = $2) AND ($3 = '' OR environment_id = $3)
  GROUP BY workflow_id, environment_id),
s AS (
  SELECT r.workflow_id, r.environment_id, count(*) AS ready, min(s.ready_at) AS oldest
  FROM step_runs s JOIN runs r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
  WHERE s.tenant_id = $1 AND s.status = 'queued' AND s.ready_at IS NOT NULL AND s.ready_at <= $4
    AND ($2 = '' OR r.workflow_id = $2) AND ($3 = '' OR r.environment_id = $3)
  GROUP BY r.workflow_id, r.environment_id),
a AS (
  SELECT r.workflow_id, r.environment_id, count(*) AS open, min(a.created_at) AS oldest
  FROM approval_requests a JOIN runs r ON r.tenant_id = a.tenant_id AND r.id = a.run_id
  WHERE a.tenant_id = $1 AND a.status = 'pending'
    AND ($2 = '' OR r.workflow_id = $2) AND ($3 = '' OR r.environment_id = $3)
  GROUP BY r.workflow_id, r.environment_id),
hr AS (
  SELECT r.workflow_id, r.environment_id, h.reason, count(*) AS n, min(h.since) AS oldest
  FROM held_steps h JOIN runs r ON r.tenant_id = h.tenant_id AND r.id = h.run_id
  WHERE h.tenant_id = $1
    AND ($2 = '' OR r.workflow_id = $2) AND ($3 = '' OR r.environment_id = $3)
  GROUP BY r.workflow_id, r.environment_id, h.reason),
h AS (
  SELECT workflow_id, environment_id, sum(n)::bigint AS held,
         json_agg(json_build_object('reason', reason, 'steps', n, 'oldest', oldest) ORDER BY reason) AS reasons
  FROM hr GROUP BY workflow_id, environment_id)
SELECT workflow_id, environment_id,
       coalesce(r.queued, 0), coalesce(r.running, 0), coalesce(r.waiting, 0),
       coalesce(s.ready, 0), s.oldest, coalesce(a.open, 0), a.oldest,
       coalesce(h.held, 0), h.reasons
FROM r FULL JOIN s USING (workflow_id, environment_id) FULL JOIN a USING (workflow_id, environment_id)
  FULL JOIN h USING (workflow_id, environment_id)
ORDER BY workflow_id, environment_id`

// QueueStats reads the backlog of the caller's tenant by workflow and
// environment, optionally for one workflow and one environment; every role
// may read it. A key scoped to one environment sees that environment only.
// It returns the time the figures were read at.
func (s *Service) QueueStats(ctx context.Context, workflowID, environmentID string) (time.Time, []BacklogRow, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return time.Time{}, nil, err
	}
	if workflowID != "" && !ids.Valid(workflowID, ids.Workflow) {
		return time.Time{}, nil, errs.Invalid("workflowID", "not a workflow id")
	}
	if environmentID != "" && !ids.Valid(environmentID, ids.Environment) {
		return time.Time{}, nil, errs.Invalid("environmentID", "not an environment id")
	}
	if v.EnvironmentID != "" {
		// This SQL bypasses Ent's privacy rules: a key scoped to one
		// environment reads that environment's backlog only.
		if environmentID != "" && environmentID != v.EnvironmentID {
			return time.Time{}, nil, errs.E(errs.NotFound, "environment not found")
		}
		environmentID = v.EnvironmentID
	}
	now := s.now()
	rows, err := backlog(ctx, c, v.TenantID, workflowID, environmentID, now)
	return now, rows, err
}

// Backlog reads every tenant's backlog as of now (for the sluice_backlog_*
// gauges), one tenant transaction each, through client (the app role's).
func Backlog(ctx context.Context, client *ent.Client, now time.Time) (map[string][]BacklogRow, error) {
	tenants, err := store.TenantIDs(ctx, client)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]BacklogRow, len(tenants))
	for _, tid := range tenants {
		err := store.InTenant(viewer.SystemContext(ctx, tid), client, func(ctx context.Context) error {
			c, err := store.Client(ctx)
			if err != nil {
				return err
			}
			rows, err := backlog(ctx, c, tid, "", "", now)
			if len(rows) > 0 {
				out[tid] = rows
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func backlog(ctx context.Context, c *ent.Client, tenantID, workflowID, environmentID string, now time.Time) ([]BacklogRow, error) {
	rows, err := c.QueryContext(ctx, backlogSQL, tenantID, workflowID, environmentID, now)
	if err != nil {
		return nil, fmt.Errorf("queue stats: %w", err)
	}
	defer rows.Close()
	var out []BacklogRow
	for rows.Next() {
		var r BacklogRow
		var ready, approval sql.NullTime
		var reasons []byte
		if err := rows.Scan(&r.WorkflowID, &r.EnvironmentID, &r.RunsQueued, &r.RunsRunning, &r.RunsWaiting,
			&r.StepsReady, &ready, &r.ApprovalsOpen, &approval, &r.StepsHeld, &reasons); err != nil {
			return nil, err
		}
		if len(reasons) > 0 {
			if err := json.Unmarshal(reasons, &r.Held); err != nil {
				return nil, fmt.Errorf("queue stats: held steps: %w", err)
			}
			for i := range r.Held {
				r.Held[i].OldestSince = r.Held[i].OldestSince.UTC()
			}
		}
		if ready.Valid {
			t := ready.Time.UTC()
			r.OldestReadyAt = &t
		}
		if approval.Valid {
			t := approval.Time.UTC()
			r.OldestApprovalAt = &t
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
