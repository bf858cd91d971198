package runs

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
)

// Tenant expressions are evaluated by workers only, never by the API
// process that takes a request: an expression is bounded (definition's
// caps) but still costs up to seconds and megabytes, which must not be
// spent, or crash, where every tenant's requests are served. So a step
// whose start evaluates an expression (its `if`, an approval's templated
// message, a delay's until) is queued with an attempt like any step, and
// the worker that claims the attempt decides first: skip the step, fail it,
// open its approval, schedule its delay, or run it. An approval decided
// through the API is finished the same way, so its dependents' expressions
// and the run's output are evaluated by a worker too.

// decide settles what the claim of a queued step must decide before the
// step runs. It reports whether it handled the step (nothing to run).
func (s *runState) decide(ctx context.Context, step *definition.Step, sr *ent.StepRun) (bool, error) {
	if done, err := s.finishSkip(ctx, sr); done || err != nil {
		return done, err // an operator's skip (override.go)
	}
	switch step.Type {
	case definition.StepApproval:
		apr, err := latestApprovalOfStep(ctx, s.run.TenantID, sr.ID)
		if err != nil {
			return false, fmt.Errorf("approval of step %s: %w", step.ID, err)
		}
		if apr != nil && apr.Status == approvalrequest.StatusApproved {
			by, comment := "", ""
			if apr.DecidedBy != nil {
				by = *apr.DecidedBy
			}
			if apr.Comment != nil {
				comment = *apr.Comment
			}
			return true, s.finishApproval(ctx, sr, by, comment)
		}
	case definition.StepDelay, definition.StepWorkflow:
	case definition.StepWait:
		// Resolved through the API as its run's last open step: finish it.
		w, err := latestWaitOfStep(ctx, s.run.TenantID, sr.ID)
		if err != nil {
			return false, fmt.Errorf("wait of step %s: %w", step.ID, err)
		}
		if w != nil && w.Status == waitResolved {
			by := "event"
			if w.EventID == nil {
				by = "callback"
			}
			return true, s.finishWait(ctx, sr, w, *sr.CurrentAttemptID, by)
		}
	default:
		if step.If == "" || sr.StartedAt != nil {
			return false, nil // no condition, or decided when it first ran
		}
	}
	if err := s.load(ctx, step.Needs...); err != nil {
		return false, err
	}
	if step.If != "" {
		ok, err := definition.EvalBool(step.Path()+".if", step.If, s.expressionEnv())
		if err != nil {
			return true, s.failStepNow(ctx, sr, exprClass(err), "evaluate if: "+err.Error())
		}
		if !ok {
			return true, s.skipStep(ctx, sr)
		}
	}
	switch step.Type {
	case definition.StepApproval:
		if err := s.openApproval(ctx, sr, step); err != nil {
			return true, err
		}
		return true, s.settle(ctx) // the run now waits
	case definition.StepWait:
		if err := s.beginWait(ctx, sr, step); err != nil || s.terminal() {
			return true, err
		}
		return true, s.settle(ctx)
	case definition.StepWorkflow:
		if err := s.beginChild(ctx, sr, step); err != nil || s.terminal() {
			return true, err
		}
		return true, s.settle(ctx)
	case definition.StepDelay:
		decision := *sr.CurrentAttemptID
		if err := s.scheduleDelay(ctx, sr, step); err != nil {
			return true, err
		}
		if s.terminal() {
			return true, nil
		}
		if err := s.setAttempt(ctx, decision, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now), 1); err != nil {
			return true, err
		}
		return true, s.settle(ctx)
	}
	return false, nil
}

// endDecision records the end of a queued step's decision attempt (the
// attempt its claim decided with, not ran).
func (s *runState) endDecision(ctx context.Context, sr *ent.StepRun, status stepattempt.Status) error {
	if sr.Status != steprun.StatusQueued || sr.CurrentAttemptID == nil {
		return nil
	}
	return s.setAttempt(ctx, *sr.CurrentAttemptID, changeAttempt().SetStatus(status).SetFinishedAt(s.now), 1)
}

// skipStep skips a step whose `if` is false, and moves on to its dependents.
func (s *runState) skipStep(ctx context.Context, sr *ent.StepRun) error {
	if err := s.endDecision(ctx, sr, stepattempt.StatusCancelled); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSkipped).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepSkipped, sr.StepID, 0, nil)
	return s.advanceFrom(ctx, sr.StepID)
}

// finishApproval completes an approval step approved through the API.
func (s *runState) finishApproval(ctx context.Context, sr *ent.StepRun, by, comment string) error {
	if err := s.endDecision(ctx, sr, stepattempt.StatusSucceeded); err != nil {
		return err
	}
	out := map[string]any{"approved": true, "decision": "approve", "decidedBy": by, "comment": comment, "timedOut": false}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(encodeJSON(out)).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepSucceeded, sr.StepID, 0, nil)
	return s.advanceFrom(ctx, sr.StepID)
}

// crashedTooOften counts, before a worker takes over a step whose holder went
// silent, how often that already happened. A holder that goes silent is a
// worker that died (or was stopped mid-step): a step that kills its worker
// every time (a poison pill) would otherwise be retried forever, taking
// down every worker in turn. After crashLimit takeovers the step fails
// with class `crashed`. The count is the attempt's step.reclaimed events,
// so it is durable in Postgres and survives Redis being wiped. A graceful
// stop of a worker mid-step (a deploy) counts too: the step is left to a
// takeover the same way.
func (s *runState) crashedTooOften(ctx context.Context, sr *ent.StepRun) (int, bool, error) {
	n, err := takeovers(ctx, s.run.TenantID, s.run.ID, sr.StepID, sr.Attempts)
	if err != nil {
		return 0, false, fmt.Errorf("count takeovers: %w", err)
	}
	// This takeover is the n+1th time the step's worker went silent.
	return n + 1, n+1 >= s.e.crashLimit, nil
}

// failCrashed fails a step whose workers went silent crashLimit times.
func (s *runState) failCrashed(ctx context.Context, sr *ent.StepRun, crashes int) error {
	msg := fmt.Sprintf("the step's worker stopped responding %d times while running it (crash limit %d); it is not run again", crashes, s.e.crashLimit)
	attemptID := *sr.CurrentAttemptID
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusFailed).
		SetErrorClass(string(steps.Crashed)).SetErrorMessage(msg).SetFinishedAt(s.now), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).
		SetErrorClass(string(steps.Crashed)).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, sr.Attempts, map[string]any{"class": string(steps.Crashed), "message": msg, "attemptID": attemptID})
	return s.failRun(ctx, sr.StepID, string(steps.Crashed), msg)
}
