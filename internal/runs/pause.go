package runs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
)

// A workflow paused in an environment (internal/pause owns the
// workflow_pauses rows) holds its runs at step boundaries: no step of them
// is claimed (claimStep) or sent to the queue (flush), and the reconciler
// leaves their ready steps alone (dueRows). The state rides on reads the
// hot path makes anyway: the run's lock (lockRunSQL) and startRun's
// deployment statement (pauseSelect). DispatchHeld sends the held steps
// again on resume.

// pauseExists is true when the run row's workflow is paused in its
// environment (a column of lockRunSQL).
const pauseExists = `EXISTS (SELECT 1 FROM workflow_pauses p WHERE p.tenant_id = runs.tenant_id
		AND p.workflow_id = runs.workflow_id AND p.environment_id = runs.environment_id)`

// notPausedStep filters step_runs rows of runs whose workflow is paused.
const notPausedStep = `NOT EXISTS (SELECT 1 FROM runs r JOIN workflow_pauses p ON p.tenant_id = r.tenant_id
		AND p.workflow_id = r.workflow_id AND p.environment_id = r.environment_id
		WHERE r.tenant_id = step_runs.tenant_id AND r.id = step_runs.run_id)`

// notPausedStepS is notPausedStep for step_runs aliased s.
const notPausedStepS = `NOT EXISTS (SELECT 1 FROM runs r JOIN workflow_pauses p ON p.tenant_id = r.tenant_id
		AND p.workflow_id = r.workflow_id AND p.environment_id = r.environment_id
		WHERE r.tenant_id = s.tenant_id AND r.id = s.run_id)`

// pauseSelect is the pause of a workflow in an environment as JSON text, or
// NULL: a column of startRun's deployment statement.
func pauseSelect(tenantCol, workflowCol, envCol string) string {
	return "(SELECT json_build_object('mode', p.mode, 'reason', p.reason, 'by', p.paused_by, 'since', p.created_at)::text FROM workflow_pauses p WHERE p.tenant_id = " +
		tenantCol + " AND p.workflow_id = " + workflowCol + " AND p.environment_id = " + envCol + ")"
}

// pauseInfo is pauseSelect's value.
type pauseInfo struct {
	Mode   string    `json:"mode"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	Since  time.Time `json:"since"`
}

// parsePause reads pauseSelect's value; nil when not paused.
func parsePause(s *string) (*pauseInfo, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	var p pauseInfo
	if err := json.Unmarshal([]byte(*s), &p); err != nil {
		return nil, fmt.Errorf("read pause: %w", err)
	}
	return &p, nil
}

// refuse is startRun's answer under a REJECT pause: CONFLICT naming it.
func (p *pauseInfo) refuse() error {
	msg := fmt.Sprintf("the workflow is paused in this environment by %s since %s", p.By, p.Since.UTC().Format(time.RFC3339))
	if p.Reason != "" {
		msg += ": " + p.Reason
	}
	return errs.E(errs.Conflict, "%s; new runs are refused until it is resumed", msg)
}

// holdDispatch drops the step tasks of a paused run before they reach the
// queue: its steps stay queued in Postgres until DispatchHeld sends them.
// Other tasks (webhook deliveries, approval timeouts, map items of a step
// already running) go as usual.
func (s *runState) holdDispatch() {
	if s.paused {
		s.tasks = slices.DeleteFunc(s.tasks, func(t tasks.Task) bool { return t.Kind == tasks.KindStep })
	}
}

// maxHeldDispatch bounds how many held steps one resume sends; the
// reconciler sends the rest (they are ready and no longer paused).
const maxHeldDispatch = 10000

// DispatchHeld sends, once the caller's transaction commits, the ready
// steps of the workflow's unfinished runs in the environment: the steps a
// pause held. It runs in the caller's tenant transaction (resumeWorkflow,
// after it deleted the pause) and returns how many steps it sends.
func (e *Service) DispatchHeld(ctx context.Context, tenantID, workflowID, environmentID string) (int, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, err
	}
	rows, err := q.Query(ctx, `SELECT s.run_id, s.step_id, s.type, s.current_attempt_id, s.ready_at FROM step_runs s
		JOIN runs r ON r.tenant_id = s.tenant_id AND r.id = s.run_id
		WHERE s.tenant_id = $1 AND r.workflow_id = $2 AND r.environment_id = $3 AND r.status IN ('queued', 'running', 'waiting')
		AND s.status IN ('queued', 'waiting') AND s.ready_at IS NOT NULL AND s.current_attempt_id IS NOT NULL
		ORDER BY s.ready_at LIMIT $4`, tenantID, workflowID, environmentID, maxHeldDispatch)
	if err != nil {
		return 0, fmt.Errorf("held steps: %w", err)
	}
	now := e.now()
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tasks.Task, error) {
		var runID, stepID, typ, attemptID string
		var readyAt time.Time
		if err := r.Scan(&runID, &stepID, &typ, &attemptID, &readyAt); err != nil {
			return tasks.Task{}, err
		}
		t := stepTask(tenantID, runID, stepID, typ, attemptID, later(readyAt, now))
		// A wake-up of its own: the attempt's task may still be in the
		// queue (a delivery refused while paused, not yet acknowledged),
		// and a duplicate delivery is fenced.
		t.Variant = "p" + strconv.FormatInt(now.UnixMilli(), 36)
		return t, nil
	})
	if err != nil {
		return 0, fmt.Errorf("held steps: %w", err)
	}
	e.dispatchAfterCommit(ctx, ts)
	return len(ts), nil
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
