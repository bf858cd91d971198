package runs

import (
	"context"
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// DecideApproval records an operator's decision. Exactly one decision wins:
// later ones get CONFLICT. The run goes on (or fails, on reject) in the same
// transaction.
func (e *Service) DecideApproval(ctx context.Context, id string, approve bool, comment string) (*ent.ApprovalRequest, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator, viewer.RoleViewer, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	apr, err := c.ApprovalRequest.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("approval request", id)
	}
	if err != nil {
		return nil, err
	}
	if !mayDecide(v, apr) {
		return nil, errs.E(errs.Forbidden, "you are not an approver of this request")
	}
	if len(comment) > 2000 {
		return nil, errs.Invalid("input.comment", "must be at most 2000 characters")
	}
	// The run lock serialises deciders with each other and with the worker.
	s, err := e.lockRun(ctx, c, apr.RunID)
	if err != nil {
		return nil, err
	}
	s.deferEval = true
	if !access.InScope(v, s.run.EnvironmentID) {
		// The privacy rules hide such an approval already (FilterRunChildrenRule).
		return nil, errs.NotFoundf("approval request", id)
	}
	if apr, err = approvalRow(ctx, v.TenantID, id); err != nil {
		return nil, err
	}
	if apr == nil {
		return nil, errs.NotFoundf("approval request", id)
	}
	if apr.Status != approvalrequest.StatusPending {
		return nil, errs.E(errs.Conflict, "approval request %s is already %s", id, apr.Status)
	}
	status, decision := approvalrequest.StatusRejected, "reject"
	if approve {
		status, decision = approvalrequest.StatusApproved, "approve"
	}
	var note *string
	if comment != "" {
		note = &comment
	}
	if err := decideApproval(ctx, apr, status, v.Subject, note, s.now); err != nil {
		return nil, err
	}
	s.emit(eventtype.ApprovalDecided, apr.StepID, 0, map[string]any{"approvalID": apr.ID, "decision": decision, "by": v.Subject, "comment": comment})
	if err := s.resolveEscalation(ctx, apr.StepID, apr.ID, v.Subject); err != nil {
		return nil, err
	}
	if err := s.settleApproval(ctx, apr, approve, false, v.Subject, comment); err != nil {
		return nil, err
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	return apr, audit.Record(ctx, c, "approval.decide", "ApprovalRequest", apr.ID, map[string]any{"decision": decision, "runID": apr.RunID})
}

// mayDecide reports whether the viewer is an approver: a listed subject, or
// a holder of a listed role (operators when the step lists none).
func mayDecide(v *viewer.Viewer, apr *ent.ApprovalRequest) bool {
	if slices.Contains(apr.ApproverSubjects, v.Subject) {
		return true
	}
	roles := apr.ApproverRoles
	if len(roles) == 0 && len(apr.ApproverSubjects) == 0 {
		roles = []string{viewer.RoleOperator}
	}
	return len(roles) > 0 && v.Has(roles...)
}

// settleApproval completes the approval step with the outcome.
func (s *runState) settleApproval(ctx context.Context, apr *ent.ApprovalRequest, approve, timedOut bool, by, comment string) error {
	sr := s.steps[apr.StepID]
	if sr == nil || sr.Status != steprun.StatusWaiting || s.terminal() {
		return nil
	}
	if step, ok := s.def.StepByID(apr.StepID); ok && step.Type != definition.StepApproval {
		// An at_most_once step whose call is uncertain (uncertain.go).
		return s.settleUncertainApproval(ctx, sr, approve, by, comment)
	}
	if approve && s.deferEval {
		// Dependents that evaluate an expression to start are queued for a
		// worker anyway (tryStart); what is left is the run's output, which
		// this step completes when it is the run's last open step: then a
		// worker finishes the step (decide.go).
		last, err := s.lastOpenStep(ctx)
		if err != nil {
			return err
		}
		if last {
			if err := s.scheduleAttemptAs(ctx, sr, s.now, steprun.StatusQueued); err != nil {
				return err
			}
			return s.settle(ctx)
		}
	}
	if approve {
		out := map[string]any{"approved": true, "decision": "approve", "decidedBy": by, "comment": comment, "timedOut": timedOut}
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(encodeJSON(out)).SetFinishedAt(s.now)); err != nil {
			return err
		}
		s.emit(eventtype.StepSucceeded, sr.StepID, 0, nil)
		return s.advance(ctx)
	}
	msg := fmt.Sprintf("approval rejected by %s", by)
	if comment != "" {
		msg += ": " + comment
	}
	if timedOut {
		msg = "approval timed out"
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(string(steps.Permanent)).SetErrorMessage(msg).SetFinishedAt(s.now)); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, 0, map[string]any{"class": string(steps.Permanent), "message": msg})
	return s.failRun(ctx, sr.StepID, string(steps.Permanent), msg)
}

// ExpireApproval applies an approval's onTimeout once it is past due.
func (e *Service) ExpireApproval(ctx context.Context, tenantID, approvalID string) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	return store.InTenant(ctx, e.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		apr, err := approvalRow(ctx, tenantID, approvalID)
		if err != nil || apr == nil {
			return err
		}
		s, err := e.lockRun(ctx, c, apr.RunID)
		if err != nil {
			return err
		}
		if apr, err = approvalRow(ctx, tenantID, approvalID); err != nil || apr == nil {
			return err
		}
		if apr.Status != approvalrequest.StatusPending || apr.ExpiresAt == nil || apr.ExpiresAt.After(s.now) {
			return nil
		}
		if err := decideApproval(ctx, apr, approvalrequest.StatusExpired, "timeout", nil, s.now); err != nil {
			return err
		}
		action := string(apr.OnTimeout)
		s.emit(eventtype.ApprovalExpired, apr.StepID, 0, map[string]any{"approvalID": apr.ID, "onTimeout": action})
		if err := s.resolveEscalation(ctx, apr.StepID, apr.ID, "timeout"); err != nil {
			return err
		}
		switch apr.OnTimeout {
		case approvalrequest.OnTimeoutApprove:
			err = s.settleApproval(ctx, apr, true, true, "timeout", "")
		default:
			err = s.settleApproval(ctx, apr, false, true, "timeout", "")
		}
		if err != nil {
			return err
		}
		return s.flush(ctx)
	})
}

// lastOpenStep reports whether the run has one step that is not finished
// (pending, queued, running or waiting): the one being decided.
func (s *runState) lastOpenStep(ctx context.Context) (bool, error) {
	counts, err := s.stepCounts(ctx)
	if err != nil {
		return false, err
	}
	open := 0
	for _, st := range []steprun.Status{steprun.StatusPending, steprun.StatusQueued, steprun.StatusRunning, steprun.StatusWaiting} {
		open += counts[string(st)]
	}
	return open <= 1, nil
}
