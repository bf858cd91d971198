package runs

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
)

// At-most-once delivery (definition.DeliveryAtMostOnce).
//
// Before an at_most_once step's call is sent, the attempt's sent_at is
// committed (markSent, one extra transaction that only these steps pay).
// From then on the call may have reached the receiver, so it is never sent
// again automatically:
//   - a takeover of the attempt (its worker died) that finds sent_at set
//     ends it as `uncertain` instead of running it again (takeoverUncertain);
//   - a failure of the call that may have been sent (any response, or a
//     transport failure after a connection was made: timeout, reset) is
//     `uncertain` rather than `transient`, and is not retried
//     (deliveryClass). Only failures that certainly sent nothing (DNS,
//     connect, TLS, egress refusal) keep their class and retry.
// An uncertain step fails the run, or with onUncertain: "ask" waits for an
// operator: an approval request whose approval sends the call once more as
// a new attempt and whose rejection fails the step as `uncertain`.

// errAttemptHeld: another worker recorded the send of this attempt first
// (it took over while this one was slow, or the reverse): this one sends
// nothing and records nothing.
var errAttemptHeld = errors.New("another worker holds this attempt")

// markSent returns the BeforeSend hook of an at_most_once attempt: it
// commits sent_at, fenced so that of two holders of one attempt only one
// may send.
func (e *Service) markSent(j *job) func(context.Context) error {
	return func(ctx context.Context) error {
		var marked bool
		err := store.InTenant(ctx, e.client, func(ctx context.Context) error {
			var err error
			marked, err = markAttemptSent(ctx, j.attemptID, e.now())
			return err
		})
		if err != nil {
			return err
		}
		if !marked {
			j.held = true
			return errAttemptHeld
		}
		return nil
	}
}

// deliveryClass applies the step's delivery guarantee to a classified
// failure: under at_most_once, a transient failure that may have reached
// the receiver is uncertain.
func deliveryClass(step *definition.Step, replayed bool, se *steps.Error) *steps.Error {
	if se == nil || !step.AtMostOnce() || replayed || se.Class != steps.Transient || se.NotSent {
		return se
	}
	return &steps.Error{
		Class:      steps.Uncertain,
		Message:    se.Message + " (the call may have reached the receiver; delivery at_most_once does not send it again)",
		StatusCode: se.StatusCode,
	}
}

// takeoverUncertain is a takeover of an at_most_once attempt: if its call
// may have been sent, the attempt ends as uncertain (and the step fails or
// asks) and true is returned; otherwise nothing was sent and the attempt
// may run again.
func (s *runState) takeoverUncertain(ctx context.Context, step *definition.Step, sr *ent.StepRun, attemptID string, number int) (bool, error) {
	sentAt, err := attemptSentAt(ctx, attemptID)
	if err != nil {
		return false, fmt.Errorf("attempt %s: %w", attemptID, err)
	}
	if sentAt == nil {
		return false, nil
	}
	msg := "the worker was lost while the call may have been in flight (sent at " + sentAt.UTC().Format("2006-01-02T15:04:05.000Z") +
		"); delivery at_most_once does not send it again"
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusFailed).SetFinishedAt(s.now).
		SetErrorClass(string(steps.Uncertain)).SetErrorMessage(msg), 1); err != nil {
		return false, err
	}
	return true, s.settleUncertain(ctx, step, sr, attemptID, number, msg)
}

// settleUncertain ends an at_most_once step whose attempt is uncertain
// (the attempt already recorded): it fails the step and the run, or with
// onUncertain: "ask" parks the step for an operator's decision.
func (s *runState) settleUncertain(ctx context.Context, step *definition.Step, sr *ent.StepRun, attemptID string, number int, msg string) error {
	if step.UncertainAction() == definition.OnUncertainAsk && !s.terminal() {
		return s.askUncertain(ctx, sr, attemptID, number, msg)
	}
	class := string(steps.Uncertain)
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, number, map[string]any{"class": class, "message": msg, "attemptID": attemptID})
	return s.failRun(ctx, sr.StepID, class, msg)
}

// askUncertain opens an approval request for an uncertain step: approving
// sends the call again (a new attempt), rejecting fails the step. The step
// waits with no current attempt, so no delivery of the old one runs it.
func (s *runState) askUncertain(ctx context.Context, sr *ent.StepRun, attemptID string, number int, msg string) error {
	message := fmt.Sprintf("Step %s (at_most_once) may or may not have reached its receiver: %s. Approve to send it again, reject to fail the step.", sr.StepID, msg)
	apr := &ent.ApprovalRequest{ID: ids.New(ids.ApprovalRequest), TenantID: s.run.TenantID, CreatedAt: s.now, UpdatedAt: s.now,
		RunID: s.run.ID, StepID: sr.StepID, StepRunID: sr.ID, Status: approvalrequest.StatusPending, Message: message,
		Context: map[string]any{"reason": "uncertain", "attemptID": attemptID, "attempt": number, "error": msg,
			"workflowID": s.run.WorkflowID, "versionID": s.run.VersionID},
		OnTimeout: approvalrequest.OnTimeoutFail}
	if err := insertApproval(ctx, apr); err != nil {
		return fmt.Errorf("create approval: %w", err)
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusWaiting).ClearCurrentAttemptID().ClearReadyAt().
		SetErrorClass(string(steps.Uncertain)).SetErrorMessage(msg)); err != nil {
		return err
	}
	s.emit(eventtype.ApprovalRequested, sr.StepID, number, map[string]any{"approvalID": apr.ID, "message": message, "reason": "uncertain", "attemptID": attemptID})
	return s.settle(ctx)
}

// settleUncertainApproval applies an operator's decision on an uncertain
// step: approve sends the call once more as a new attempt, reject fails
// the step as uncertain.
func (s *runState) settleUncertainApproval(ctx context.Context, sr *ent.StepRun, approve bool, by, comment string) error {
	if approve {
		if err := s.scheduleAttempt(ctx, sr, s.now); err != nil {
			return err
		}
		return s.settle(ctx)
	}
	msg := "uncertain call not sent again: rejected by " + by
	if comment != "" {
		msg += ": " + comment
	}
	class := string(steps.Uncertain)
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now)); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, 0, map[string]any{"class": class, "message": msg})
	return s.failRun(ctx, sr.StepID, class, msg)
}
