package runs

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
)

// Escalator starts and resolves the escalations of approval steps that
// name an escalation policy (internal/escalation), in the run's
// transaction (c), under the run's lock.
type Escalator interface {
	StartApproval(ctx context.Context, c *ent.Client, tenantID, policyName, approvalID, runID, stepID, summary string, details map[string]any, now time.Time) error
	ResolveApproval(ctx context.Context, c *ent.Client, tenantID, approvalID, by string, now time.Time) error
	ResolveRun(ctx context.Context, c *ent.Client, tenantID, runID, by string, now time.Time) error
}

// WithRunLock takes a run's lock in the transaction of ctx (c bound to
// it), lets fn emit approval.escalated events under it, and appends them
// to the run's event log with their seq, delivered like every run event
// (webhook outbox in the transaction, live subscribers after commit). The
// escalation of an approval fires its levels through it, so they take the
// run's lock before the escalation's, as a decision does.
func (e *Service) WithRunLock(ctx context.Context, c *ent.Client, runID string, fn func(emit func(stepID string, data map[string]any)) error) error {
	s, err := e.lockRunSteps(ctx, c, runID)
	if err != nil {
		return err
	}
	if err := fn(func(stepID string, data map[string]any) { s.emit(eventtype.ApprovalEscalated, stepID, 0, data) }); err != nil {
		return err
	}
	return s.flush(ctx)
}

// startEscalation starts the escalation of an approval just opened, when
// its step names a policy. A sandbox replay pages no one.
func (s *runState) startEscalation(ctx context.Context, step *definition.Step, approvalID, msg string) error {
	if step.Escalation == "" || s.e.escalator == nil || s.run.Mode == run.ModeSandbox {
		return nil
	}
	summary := "Approval " + step.ID + " of run " + s.run.ID + " waits for a decision"
	if msg != "" {
		summary += ": " + msg
	}
	details := map[string]any{"workflowID": s.run.WorkflowID, "versionID": s.run.VersionID, "environmentID": s.run.EnvironmentID}
	return s.e.escalator.StartApproval(ctx, s.c, s.run.TenantID, step.Escalation, approvalID, s.run.ID, step.ID, summary, details, s.now)
}

// resolveEscalation resolves an approval's escalation once it is decided
// or expired.
func (s *runState) resolveEscalation(ctx context.Context, stepID, approvalID, by string) error {
	if s.e.escalator == nil {
		return nil
	}
	if step, ok := s.def.StepByID(stepID); !ok || step.Escalation == "" {
		return nil
	}
	return s.e.escalator.ResolveApproval(ctx, s.c, s.run.TenantID, approvalID, by, s.now)
}

// resolveRunEscalations resolves the escalations of a run's open
// approvals when the run stops (cancelled or failed) with them pending.
func (s *runState) resolveRunEscalations(ctx context.Context) error {
	if s.e.escalator == nil || len(s.def.EscalationRefs()) == 0 {
		return nil
	}
	return s.e.escalator.ResolveRun(ctx, s.c, s.run.TenantID, s.run.ID, "run stopped", s.now)
}
