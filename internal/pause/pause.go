// Package pause owns pausing a workflow in an environment: the
// workflow_pauses rows (one per workflow and environment, tenant data under
// RLS), pauseWorkflow and resumeWorkflow with their audit entries and
// tenant events, and what a run shows about being held (queueReason).
//
// The run state machine (internal/runs) reads the pause where it reads
// anyway: startRun's deployment statement (QUEUE: the run is created and
// nothing is sent; REJECT: CONFLICT) and the run's lock on every claim and
// finish (no step starts and none is sent to the queue). Resuming deletes
// the row and, in the same transaction, has the state machine send the
// held steps after commit (runs.Service.DispatchHeld); a lost send is
// recovered by the reconciler, which skips paused runs only.
package pause

import (
	"context"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/heldstep"
	"github.com/sluicehq/sluice/ent/workflowpause"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// MaxReason bounds a pause's reason, in characters.
const MaxReason = 2000

// Roles may pause and resume: editors (who own workflows) and operators
// (who run them); admins and owners hold every role.
var Roles = []string{viewer.RoleEditor, viewer.RoleOperator}

// EventRecorder writes a tenant event's webhook deliveries in the caller's
// transaction (webhook.Service.RecordEvent).
type EventRecorder interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// HeldSteps sends, after the caller's transaction commits, the steps a
// pause held (runs.Service.DispatchHeld).
type HeldSteps interface {
	DispatchHeld(ctx context.Context, tenantID, workflowID, environmentID string) (int, error)
}

// Options configure a Service.
type Options struct {
	// Events records workflow.paused and workflow.resumed; nil records none.
	Events EventRecorder
	// Runs sends held steps on resume; nil sends none (the reconciler
	// does, within its grace).
	Runs HeldSteps
	// Now is the clock. If nil, the UTC wall clock at microseconds (what
	// Postgres keeps, so a pause reads back as it was returned).
	Now func() time.Time
}

// Service is the pause room's door.
type Service struct{ o Options }

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	return &Service{o: o}
}

// Input is what pauseWorkflow takes.
type Input struct {
	WorkflowID, EnvironmentID string
	Mode                      workflowpause.Mode
	Reason                    string
}

// Pause pauses a workflow in an environment, or changes the mode and
// reason of its pause (who paused it becomes the caller; since when stays).
func (s *Service) Pause(ctx context.Context, in Input) (*ent.WorkflowPause, error) {
	v, c, err := access.Authorize(ctx, Roles...)
	if err != nil {
		return nil, err
	}
	if err := workflowpause.ModeValidator(in.Mode); err != nil {
		return nil, errs.Invalid("input.mode", "must be QUEUE or REJECT")
	}
	if utf8.RuneCountInString(in.Reason) > MaxReason {
		return nil, errs.Invalid("input.reason", "must be at most %d characters", MaxReason)
	}
	if err := s.target(ctx, c, in.WorkflowID, in.EnvironmentID); err != nil {
		return nil, err
	}
	cur, err := s.lock(ctx, c, v, in.WorkflowID, in.EnvironmentID)
	if err != nil {
		return nil, err
	}
	now := s.o.Now()
	var p *ent.WorkflowPause
	if cur == nil {
		p, err = c.WorkflowPause.Create().SetWorkflowID(in.WorkflowID).SetEnvironmentID(in.EnvironmentID).
			SetMode(in.Mode).SetReason(in.Reason).SetPausedBy(v.Subject).SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
	} else {
		p, err = cur.Update().SetMode(in.Mode).SetReason(in.Reason).SetPausedBy(v.Subject).SetUpdatedAt(now).Save(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("save pause: %w", err)
	}
	data := describe(p)
	data["updated"] = cur != nil
	return p, s.record(ctx, c, v, "workflow.pause", eventtype.WorkflowPaused, in.WorkflowID, data, now)
}

// Resume ends a workflow's pause in an environment and sends its held
// steps. Resuming one that is not paused changes nothing and writes
// nothing: resumed is false.
func (s *Service) Resume(ctx context.Context, workflowID, environmentID string) (resumed bool, dispatched int, err error) {
	v, c, err := access.Authorize(ctx, Roles...)
	if err != nil {
		return false, 0, err
	}
	if err := s.target(ctx, c, workflowID, environmentID); err != nil {
		return false, 0, err
	}
	cur, err := s.lock(ctx, c, v, workflowID, environmentID)
	if err != nil || cur == nil {
		return false, 0, err
	}
	if err := c.WorkflowPause.DeleteOne(cur).Exec(ctx); err != nil {
		return false, 0, fmt.Errorf("delete pause: %w", err)
	}
	if s.o.Runs != nil {
		if dispatched, err = s.o.Runs.DispatchHeld(ctx, v.TenantID, workflowID, environmentID); err != nil {
			return false, 0, err
		}
	}
	now := s.o.Now()
	data := describe(cur)
	data["pausedFor"] = now.Sub(cur.CreatedAt).Round(time.Millisecond).String()
	data["dispatchedSteps"] = dispatched
	return true, dispatched, s.record(ctx, c, v, "workflow.resume", eventtype.WorkflowResumed, workflowID, data, now)
}

// target checks that the workflow and the environment exist for the
// caller (another tenant's are not found) before anything is written.
func (s *Service) target(ctx context.Context, c *ent.Client, workflowID, environmentID string) error {
	if _, err := c.Workflow.Get(ctx, workflowID); ent.IsNotFound(err) {
		return &errs.Error{Code: errs.NotFound, Message: fmt.Sprintf("workflow %q not found", workflowID),
			Problems: []errs.Problem{{Path: "input.workflowID", Message: "not found"}}}
	} else if err != nil {
		return err
	}
	_, err := control.EnvironmentByID(ctx, c, environmentID, "input.environmentID")
	return err
}

// lock serialises pauses and resumes of one workflow in one environment
// and returns its pause, or nil.
func (s *Service) lock(ctx context.Context, c *ent.Client, v *viewer.Viewer, workflowID, environmentID string) (*ent.WorkflowPause, error) {
	if _, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "pause/"+v.TenantID+"/"+workflowID+"/"+environmentID); err != nil {
		return nil, err
	}
	p, err := c.WorkflowPause.Query().
		Where(workflowpause.WorkflowID(workflowID), workflowpause.EnvironmentID(environmentID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return p, err
}

func describe(p *ent.WorkflowPause) map[string]any {
	return map[string]any{"workflowID": p.WorkflowID, "environmentID": p.EnvironmentID, "mode": string(p.Mode),
		"reason": p.Reason, "pausedBy": p.PausedBy, "pausedAt": p.CreatedAt}
}

func (s *Service) record(ctx context.Context, c *ent.Client, v *viewer.Viewer, action string, t eventtype.Type, workflowID string, data map[string]any, now time.Time) error {
	if err := audit.Record(ctx, c, action, "Workflow", workflowID, data); err != nil {
		return err
	}
	if s.o.Events == nil {
		return nil
	}
	_, err := s.o.Events.RecordEvent(ctx, c, v.TenantID, webhook.Event{Type: t, Data: data}, now)
	return err
}

// Of lists a workflow's pauses, one per paused environment, as the caller
// may see them (an environment-scoped key sees its environment's only).
func Of(ctx context.Context, c *ent.Client, workflowID string) ([]*ent.WorkflowPause, error) {
	q := c.WorkflowPause.Query().Where(workflowpause.WorkflowID(workflowID))
	if v := viewer.FromContext(ctx); v != nil && v.EnvironmentID != "" {
		q.Where(workflowpause.EnvironmentID(v.EnvironmentID))
	}
	return q.Order(ent.Asc(workflowpause.FieldEnvironmentID)).All(ctx)
}

// For is a workflow's pause in an environment, or nil.
func For(ctx context.Context, c *ent.Client, workflowID, environmentID string) (*ent.WorkflowPause, error) {
	if v := viewer.FromContext(ctx); v != nil && !access.InScope(v, environmentID) {
		return nil, nil
	}
	p, err := c.WorkflowPause.Query().
		Where(workflowpause.WorkflowID(workflowID), workflowpause.EnvironmentID(environmentID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return p, err
}

// QueueReason is why a run is held.
type QueueReason string

// Queue reasons: a pause, and fair dispatch (internal/runs/dispatch.go).
const (
	QueuePaused QueueReason = "PAUSED"
	// QueueTenantShare: the tenant has its share of ready steps in the
	// queue already; the run's step waits in Postgres for its turn.
	QueueTenantShare QueueReason = "TENANT_SHARE"
	// QueueTenantConcurrency: the tenant runs its plan's
	// maxConcurrentSteps, or has its plan's maxConcurrentRuns unfinished,
	// already.
	QueueTenantConcurrency QueueReason = "TENANT_CONCURRENCY"
	// QueueKeyConcurrency: the workflow's concurrency limit for the run's
	// key is reached in its environment (internal/runs/concurrency.go).
	QueueKeyConcurrency QueueReason = "KEY_CONCURRENCY"
	// QueueNamedLimit: one of the run's steps names a concurrency limit
	// whose steps all run (internal/runs/limits.go).
	QueueNamedLimit QueueReason = "NAMED_LIMIT"
)

// Held says why an unfinished run is held and since when: PAUSED while its
// workflow is paused in its environment, since the pause or the run's
// creation, whichever is later; otherwise TENANT_SHARE or
// TENANT_CONCURRENCY while fair dispatch holds one of its steps (KEY_CONCURRENCY,
// NAMED_LIMIT for a concurrency key or a named limit), since the
// oldest such step was held. A finished run is not held.
func Held(ctx context.Context, c *ent.Client, r *ent.Run) (QueueReason, *time.Time, error) {
	switch r.Status {
	case "succeeded", "failed", "cancelled":
		return "", nil, nil
	}
	p, err := For(ctx, c, r.WorkflowID, r.EnvironmentID)
	if err != nil {
		return "", nil, err
	}
	if p != nil {
		since := p.CreatedAt
		if r.CreatedAt.After(since) {
			since = r.CreatedAt
		}
		return QueuePaused, &since, nil
	}
	h, err := c.HeldStep.Query().Where(heldstep.RunID(r.ID)).Order(ent.Asc(heldstep.FieldSince)).First(ctx)
	if ent.IsNotFound(err) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	reason := QueueTenantShare
	switch h.Reason {
	case "tenant_concurrency":
		reason = QueueTenantConcurrency
	case "key_concurrency":
		reason = QueueKeyConcurrency
	case "tenant_runs":
		// The plan's maxConcurrentRuns (internal/runs/runcap.go).
		reason = QueueTenantConcurrency
	case "named_limit":
		reason = QueueNamedLimit
	}
	return reason, &h.Since, nil
}
