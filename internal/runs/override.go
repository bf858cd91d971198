package runs

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/credentialwait"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tracing"
)

// Operator overrides: an operator ends one step of a run by hand (skipStep,
// with the output its dependents will read) or runs a failed one again now
// (retryStep). Both go through the run's lock like resumeRun, continue a
// failed run the way resumeRun does (reopen), and leave three marks: an
// event (step.skipped_by_operator, step.retried_by_operator), an audit entry
// with the reason, and a call of kind "override" in the step's trace (its
// attempts' calls) naming who and why.

// maxOverrideReason bounds an override's reason.
const maxOverrideReason = 1000

// overrideCall is the trace's record of an override: a call of kind
// "override" (StepCall.override, by, reason).
func overrideCall(action, by, reason string) map[string]any {
	return map[string]any{"kind": "override", "override": action, "by": by, "reason": reason}
}

// SkipStep ends a failed or waiting step with output, as if it had
// succeeded with it, and continues the run (a failed run runs again, its
// other failed steps too, as with resumeRun). The output must fit what the
// definition knows of the step's output (VALIDATION at output.<field>).
func (e *Service) SkipStep(ctx context.Context, runID, stepID string, output any, reason string) (*ent.Run, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	v, c, s, err := e.operateRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	step, sr, err := s.overridable(stepID)
	if err != nil {
		return nil, err
	}
	if err := refusePurgedID(ctx, c, runID, "continued"); err != nil {
		return nil, err
	}
	switch {
	case sr.Status != steprun.StatusFailed && sr.Status != steprun.StatusWaiting:
		return nil, errs.E(errs.Conflict, "step %s is %s: only a failed or waiting step can be skipped", stepID, sr.Status)
	case sr.Status == steprun.StatusWaiting && (step.Type == definition.StepWorkflow || step.Type == definition.StepMap):
		// Their child runs or items would go on without their parent.
		return nil, errs.E(errs.Conflict, "step %s is a waiting %s step: cancel its work or let it fail, then skip it", stepID, step.Type)
	}
	if output == nil {
		return nil, errs.Invalid("output", "is required")
	}
	if m := s.def.CheckOutput(stepID, output); m != nil {
		path := "output"
		if m.Path != "" {
			path += "." + m.Path
		}
		return nil, errs.Invalid(path, "%s", m.Message)
	}
	raw := encodeJSON(definition.NormalizeJSON(output))
	if err := s.checkOutputSize(ctx, len(raw)); err != nil {
		var se *steps.Error
		if errors.As(err, &se) {
			return nil, errs.Invalid("output", "%s", se.Message)
		}
		return nil, err
	}
	if sr.Status == steprun.StatusWaiting {
		if err := s.releaseWaitingStep(ctx, sr, v.Subject); err != nil {
			return nil, err
		}
	}
	if s.run.Status == run.StatusFailed {
		if err := s.reopen(ctx, map[string]any{"by": v.Subject, "override": "skip", "stepID": stepID}); err != nil {
			return nil, err
		}
		sr = s.steps[stepID] // pending now
	}
	s.deferEval = true
	last, err := s.lastOpenStep(ctx)
	if err != nil {
		return nil, err
	}
	// The override is the step's last attempt: its span in the trace.
	n := sr.Attempts + 1
	call := overrideCall("skip", v.Subject, reason)
	var attemptID string
	if last {
		// Finishing this step finishes the run, whose output is a tenant
		// expression that only workers evaluate: the step is queued with
		// the supplied output and a worker's claim finishes it
		// (finishSkip).
		if err := s.scheduleAttemptAs(ctx, sr, s.now, steprun.StatusQueued); err != nil {
			return nil, err
		}
		attemptID = *s.steps[stepID].CurrentAttemptID
		if err := s.setAttempt(ctx, attemptID, changeAttempt().SetCalls([]map[string]any{call}), 1); err != nil {
			return nil, err
		}
		if err := s.setStep(ctx, s.steps[stepID], changeStep().SetOutput(raw)); err != nil {
			return nil, err
		}
	} else {
		att := newAttempt(s.run.TenantID, s.run.ID, sr, n, s.now, s.now)
		attemptID = att.ID
		if err := insertAttempt(ctx, att); err != nil {
			return nil, err
		}
		if err := s.setAttempt(ctx, att.ID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).
			SetStartedAt(s.now).SetFinishedAt(s.now).SetCalls([]map[string]any{call}), 1); err != nil {
			return nil, err
		}
		u := changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(raw).SetAttempts(n).SetCurrentAttemptID(att.ID).
			SetFinishedAt(s.now).ClearErrorClass().ClearErrorMessage().ClearReadyAt()
		if sr.StartedAt == nil {
			u.SetStartedAt(s.now)
		}
		if err := s.setStep(ctx, sr, u); err != nil {
			return nil, err
		}
	}
	s.emit(eventtype.StepSkippedByOperator, stepID, n, map[string]any{"by": v.Subject, "reason": reason, "attemptID": attemptID})
	s.traceOverride(step, attemptID, n, call)
	if err := s.advance(ctx); err != nil {
		return nil, err
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	return s.run, audit.Record(ctx, c, "run.skip_step", "Run", runID, map[string]any{"stepID": stepID, "reason": reason, "attemptID": attemptID})
}

// RetryStep runs a failed step again now, as a new attempt, and resumes its
// run (its other failed steps run again too, as with resumeRun).
func (e *Service) RetryStep(ctx context.Context, runID, stepID, reason string) (*ent.Run, error) {
	if err := checkReason(reason); err != nil {
		return nil, err
	}
	v, c, s, err := e.operateRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	step, sr, err := s.overridable(stepID)
	if err != nil {
		return nil, err
	}
	if err := refusePurgedID(ctx, c, runID, "continued"); err != nil {
		return nil, err
	}
	if sr.Status != steprun.StatusFailed {
		return nil, errs.E(errs.Conflict, "step %s is %s: only a failed step can be retried", stepID, sr.Status)
	}
	if s.run.Status != run.StatusFailed {
		// A failed step fails its run; anything else is a run being changed
		// under the operator.
		return nil, errs.E(errs.Conflict, "run %s is %s: only a failed run's step can be retried", runID, s.run.Status)
	}
	if s.run.FailedStepID == nil || *s.run.FailedStepID == "" {
		return nil, errs.E(errs.Conflict, "run %s failed at its output, not at a step", runID)
	}
	call := overrideCall("retry", v.Subject, reason)
	if sr.CurrentAttemptID != nil {
		// The trace shows the override after the failed attempt's calls.
		if err := appendAttemptCall(ctx, s.run.TenantID, *sr.CurrentAttemptID, call); err != nil {
			return nil, err
		}
	}
	if err := s.reopen(ctx, map[string]any{"by": v.Subject, "override": "retry", "stepID": stepID}); err != nil {
		return nil, err
	}
	if err := s.advance(ctx); err != nil {
		return nil, err
	}
	next := s.steps[stepID]
	attemptID := ""
	if next.CurrentAttemptID != nil && next.Attempts > sr.Attempts {
		attemptID = *next.CurrentAttemptID
	}
	s.emit(eventtype.StepRetriedByOperator, stepID, next.Attempts, map[string]any{"by": v.Subject, "reason": reason, "attemptID": attemptID})
	s.traceOverride(step, attemptID, next.Attempts, call)
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	return s.run, audit.Record(ctx, c, "run.retry_step", "Run", runID, map[string]any{"stepID": stepID, "reason": reason, "attemptID": attemptID})
}

func checkReason(reason string) error {
	if reason == "" || len(reason) > maxOverrideReason {
		return errs.Invalid("reason", "must be 1 to %d characters", maxOverrideReason)
	}
	return nil
}

// overridable finds a step of a run an operator may override: the run has
// not succeeded or been cancelled, the step is in the definition and has
// started.
func (s *runState) overridable(stepID string) (*definition.Step, *ent.StepRun, error) {
	if s.run.Status == run.StatusSucceeded || s.run.Status == run.StatusCancelled {
		return nil, nil, errs.E(errs.Conflict, "run %s is %s", s.run.ID, s.run.Status)
	}
	step, ok := s.def.StepByID(stepID)
	if !ok {
		return nil, nil, errs.Invalid("stepID", "the run's workflow version has no step %q", stepID)
	}
	sr := s.steps[stepID]
	if sr == nil {
		return nil, nil, errs.E(errs.Conflict, "step %s has not started", stepID)
	}
	return step, sr, nil
}

// releaseWaitingStep ends what a waiting step waits on: its scheduled
// attempt (a delay, a rate limit or connection wait: a late task finds the
// attempt no longer current), its open approvals (and their escalations),
// its event waits and connection waits.
func (s *runState) releaseWaitingStep(ctx context.Context, sr *ent.StepRun, by string) error {
	if sr.CurrentAttemptID != nil {
		if err := s.setAttempt(ctx, *sr.CurrentAttemptID, changeAttempt().SetStatus(stepattempt.StatusCancelled).SetFinishedAt(s.now), -1); err != nil {
			return err
		}
	}
	open, err := s.c.ApprovalRequest.Query().Where(approvalrequest.RunID(s.run.ID), approvalrequest.StepID(sr.StepID),
		approvalrequest.StatusEQ(approvalrequest.StatusPending)).IDs(ctx)
	if err != nil {
		return err
	}
	for _, id := range open {
		if err := store.Hold(ctx, "approval_requests:"+id, 1,
			`UPDATE approval_requests SET status = 'cancelled', updated_at = $3 WHERE id = $1 AND tenant_id = $2 AND status = 'pending'`,
			id, s.run.TenantID, s.now); err != nil {
			return err
		}
		if err := s.resolveEscalation(ctx, sr.StepID, id, by); err != nil {
			return err
		}
	}
	if err := s.c.CredentialWait.Update().Where(credentialwait.StepRunID(sr.ID), credentialwait.StatusEQ(credentialwait.StatusWaiting)).
		SetStatus(credentialwait.StatusCancelled).SetResolvedAt(s.now).Exec(ctx); err != nil {
		return err
	}
	return store.Hold(ctx, "event_waits:of:"+sr.ID, -1,
		`UPDATE event_waits SET status = 'cancelled', resolved_at = $3, updated_at = $3 WHERE tenant_id = $1 AND step_run_id = $2 AND status = 'pending'`,
		s.run.TenantID, sr.ID, s.now)
}

// appendAttemptCall adds call after an attempt's recorded calls.
func appendAttemptCall(ctx context.Context, tenantID, attemptID string, call map[string]any) error {
	return store.Hold(ctx, "step_attempts:"+attemptID, 1,
		`UPDATE step_attempts SET calls = COALESCE(calls, '[]'::jsonb) || $3::jsonb WHERE id = $1 AND tenant_id = $2`,
		attemptID, tenantID, encodeJSON([]map[string]any{call}))
}

// traceOverride exports the override as a span of the run's trace once
// committed.
func (s *runState) traceOverride(step *definition.Step, attemptID string, number int, call map[string]any) {
	span := tracing.Attempt{TraceID: s.run.TraceID, RunID: s.run.ID, TenantID: s.run.TenantID, StepID: step.ID, StepType: step.Type,
		AttemptID: attemptID, Number: number, Start: s.now, End: s.now, Calls: []map[string]any{call}}
	tr := s.e.tracer
	s.afterCommit = append(s.afterCommit, func() { tr.RecordAttempt(span) })
}

// finishSkip is a worker's claim of a step skipped by an operator as its
// run's last open step (SkipStep): queued with the supplied output already
// in place and the override recorded on its attempt. It ends the step with
// that output and settles the run, evaluating its output here. It reports
// whether sr was such a step. Only a queued step with an output is looked
// at further (one read of its attempt): no other queued step has one.
func (s *runState) finishSkip(ctx context.Context, sr *ent.StepRun) (bool, error) {
	if sr.Status != steprun.StatusQueued || len(sr.Output) == 0 || sr.CurrentAttemptID == nil {
		return false, nil
	}
	att, err := s.c.StepAttempt.Get(ctx, *sr.CurrentAttemptID)
	if err != nil {
		return false, fmt.Errorf("attempt of step %s: %w", sr.StepID, err)
	}
	if len(att.Calls) != 1 || att.Calls[0]["kind"] != "override" || att.Calls[0]["override"] != "skip" {
		return false, nil
	}
	if err := s.setAttempt(ctx, att.ID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetStartedAt(s.now).SetFinishedAt(s.now), 1); err != nil {
		return true, err
	}
	u := changeStep().SetStatus(steprun.StatusSucceeded).SetFinishedAt(s.now).ClearReadyAt()
	if sr.StartedAt == nil {
		u.SetStartedAt(s.now)
	}
	if err := s.setStep(ctx, sr, u); err != nil {
		return true, err
	}
	return true, s.advanceFrom(ctx, sr.StepID)
}
