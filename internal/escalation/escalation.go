package escalation

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/escalation"
	"github.com/sluicehq/sluice/ent/escalationpolicy"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Subject kinds.
const (
	KindIncident = "incident"
	KindApproval = "approval"
)

// Subject is what an escalation pages about.
type Subject struct {
	Kind     string // "incident" or "approval"
	ID       string
	RunID    string // approvals
	DedupKey string // PagerDuty dedup_key: the incident key; approvals "approval:<id>"
	Summary  string
	Severity string // critical|error|warning|info
	Details  map[string]any
}

// Start begins the escalation of subj with a snapshot of the policy's
// levels, in the caller's tenant transaction (c); its first level is due
// after the first delay. A subject has one escalation: starting it again
// returns the one there is.
func (s *Service) Start(ctx context.Context, c *ent.Client, tenantID, policyID string, subj Subject, now time.Time) (*ent.Escalation, error) {
	ctx = viewer.SystemContext(ctx, tenantID)
	p, err := c.EscalationPolicy.Get(ctx, policyID)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("escalation policy", policyID)
	}
	if err != nil {
		return nil, err
	}
	return s.start(ctx, c, tenantID, p, subj, now)
}

func (s *Service) start(ctx context.Context, c *ent.Client, tenantID string, p *ent.EscalationPolicy, subj Subject, now time.Time) (*ent.Escalation, error) {
	if subj.Kind != KindIncident && subj.Kind != KindApproval {
		return nil, fmt.Errorf("escalation subject kind %q", subj.Kind)
	}
	if old, err := c.Escalation.Query().Where(escalation.SubjectKindEQ(escalation.SubjectKind(subj.Kind)), escalation.SubjectID(subj.ID)).Only(ctx); err == nil {
		return old, nil
	} else if !ent.IsNotFound(err) {
		return nil, err
	}
	if len(p.Levels) == 0 {
		return nil, fmt.Errorf("escalation policy %s has no levels", p.ID)
	}
	dedup := subj.DedupKey
	if len(dedup) > 255 {
		dedup = dedup[:255]
	}
	if !slices.Contains(severities, subj.Severity) {
		subj.Severity = "warning" // PagerDuty accepts only its four
	}
	at := now.Add(p.Levels[0].DelayDuration())
	cr := c.Escalation.Create().SetPolicyID(p.ID).SetPolicyName(p.Name).
		SetSubjectKind(escalation.SubjectKind(subj.Kind)).SetSubjectID(subj.ID).
		SetDedupKey(dedup).SetSummary(subj.Summary).SetSeverity(subj.Severity).
		SetLevels(p.Levels).SetRepeat(p.Repeat).SetFirings([]spec.Firing{}).SetNextFireAt(at).SetCreatedAt(now).SetUpdatedAt(now)
	if subj.RunID != "" {
		cr.SetRunID(subj.RunID)
	}
	if subj.Details != nil {
		cr.SetDetails(subj.Details)
	}
	e, err := cr.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("start escalation: %w", err)
	}
	s.dispatchAfterCommit(ctx, levelTask(tenantID, e))
	return e, nil
}

// Acknowledge records that someone took the subject on: levels that fire
// only while unacknowledged stop; IF_NOT_RESOLVED levels go on. PagerDuty
// services the escalation triggered are told (acknowledge).
func (s *Service) Acknowledge(ctx context.Context, c *ent.Client, tenantID, kind, subjectID, by string, now time.Time) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	e, err := s.lockSubject(ctx, c, kind, subjectID)
	if err != nil || e == nil || (e.Status != escalation.StatusActive && e.Status != escalation.StatusExhausted) {
		return err
	}
	// An exhausted escalation has no level left; its PagerDuty incidents
	// are still open, and are acknowledged too.
	u := e.Update().SetStatus(escalation.StatusAcknowledged).SetAcknowledgedAt(now).SetAcknowledgedBy(by).SetUpdatedAt(now)
	if e.Status == escalation.StatusExhausted || !hasCondition(e.Levels, spec.IfNotResolved) {
		u.ClearNextFireAt()
	}
	if err := u.Exec(ctx); err != nil {
		return err
	}
	return s.mirror(ctx, c, tenantID, e, pagerdutysend.ActionAcknowledge, now)
}

// Resolve ends the escalation: no level fires any more, and PagerDuty
// services it triggered are told (resolve).
func (s *Service) Resolve(ctx context.Context, c *ent.Client, tenantID, kind, subjectID, by string, now time.Time) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	e, err := s.lockSubject(ctx, c, kind, subjectID)
	if err != nil || e == nil {
		return err
	}
	return s.resolve(ctx, c, tenantID, e, by, now)
}

func (s *Service) resolve(ctx context.Context, c *ent.Client, tenantID string, e *ent.Escalation, by string, now time.Time) error {
	if e.Status != escalation.StatusActive && e.Status != escalation.StatusAcknowledged && e.Status != escalation.StatusExhausted {
		return nil
	}
	err := e.Update().SetStatus(escalation.StatusResolved).SetResolvedAt(now).SetResolvedBy(by).ClearNextFireAt().SetUpdatedAt(now).Exec(ctx)
	if err != nil {
		return err
	}
	return s.mirror(ctx, c, tenantID, e, pagerdutysend.ActionResolve, now)
}

// ResolveRun resolves the open escalations of a run's approvals (the run
// was cancelled or failed while they waited).
func (s *Service) ResolveRun(ctx context.Context, c *ent.Client, tenantID, runID, by string, now time.Time) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	list, err := c.Escalation.Query().
		Where(escalation.RunID(runID), escalation.StatusIn(escalation.StatusActive, escalation.StatusAcknowledged, escalation.StatusExhausted)).
		ForUpdate().All(ctx)
	if err != nil {
		return err
	}
	for _, e := range list {
		if err := s.resolve(ctx, c, tenantID, e, by, now); err != nil {
			return err
		}
	}
	return nil
}

// StartApproval starts the escalation of an approval that names a policy
// (by name, as definitions do), in the run's transaction. A policy
// deleted since the definition was published starts none.
func (s *Service) StartApproval(ctx context.Context, c *ent.Client, tenantID, policyName, approvalID, runID, stepID, summary string, details map[string]any, now time.Time) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	p, err := c.EscalationPolicy.Query().Where(escalationpolicy.Name(policyName)).Only(ctx)
	if ent.IsNotFound(err) {
		s.log.WarnContext(ctx, "approval names an escalation policy that no longer exists", "tenant_id", tenantID, "run_id", runID, "policy", policyName)
		return nil
	}
	if err != nil {
		return err
	}
	d := map[string]any{"approvalID": approvalID, "runID": runID, "stepID": stepID}
	for k, v := range details {
		d[k] = v
	}
	_, err = s.start(ctx, c, tenantID, p, Subject{Kind: KindApproval, ID: approvalID, RunID: runID, DedupKey: "approval:" + approvalID,
		Summary: summary, Severity: "warning", Details: d}, now)
	return err
}

// ResolveApproval resolves an approval's escalation once it is decided or
// expired.
func (s *Service) ResolveApproval(ctx context.Context, c *ent.Client, tenantID, approvalID, by string, now time.Time) error {
	return s.Resolve(ctx, c, tenantID, KindApproval, approvalID, by, now)
}

// lockSubject reads a subject's escalation with its row lock; nil when it
// has none.
func (s *Service) lockSubject(ctx context.Context, c *ent.Client, kind, subjectID string) (*ent.Escalation, error) {
	e, err := c.Escalation.Query().
		Where(escalation.SubjectKindEQ(escalation.SubjectKind(kind)), escalation.SubjectID(subjectID)).
		ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return e, err
}

// mirror tells each PagerDuty service the escalation triggered about an
// acknowledgement or resolution, with the same dedup_key.
func (s *Service) mirror(ctx context.Context, c *ent.Client, tenantID string, e *ent.Escalation, action pagerdutysend.Action, now time.Time) error {
	creds, err := c.PagerDutySend.Query().
		Where(pagerdutysend.EscalationID(e.ID), pagerdutysend.ActionEQ(pagerdutysend.ActionTrigger)).
		Unique(true).Select(pagerdutysend.FieldCredentialID).Strings(ctx)
	if err != nil {
		return err
	}
	for _, cred := range creds {
		p, err := s.newSend(ctx, c, e, cred, action, nil, now)
		if err != nil {
			return err
		}
		s.dispatchAfterCommit(ctx, sendTask(tenantID, p))
	}
	return nil
}

func (s *Service) newSend(ctx context.Context, c *ent.Client, e *ent.Escalation, credentialID string, action pagerdutysend.Action, payload map[string]any, now time.Time) (*ent.PagerDutySend, error) {
	cr := c.PagerDutySend.Create().SetEscalationID(e.ID).SetCredentialID(credentialID).SetAction(action).
		SetDedupKey(e.DedupKey).SetNextAttemptAt(now).SetCreatedAt(now).SetUpdatedAt(now)
	if payload != nil {
		cr.SetPayload(payload)
	}
	p, err := cr.Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("record pagerduty %s: %w", action, err)
	}
	return p, nil
}

func hasCondition(levels []spec.Level, c spec.Condition) bool {
	for _, l := range levels {
		if l.Condition == c {
			return true
		}
	}
	return false
}
