package sla

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// maxSamples bounds an incident's sample run ids.
const maxSamples = 10

// IncidentKey is the key of the incidents of one objective of one policy:
// hex sha256 of policy, objective and scope. It is also the dedup key
// escalation integrations (PagerDuty) use.
func IncidentKey(p *ent.SLAPolicy, objective string) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{p.ID, objective, scopeKey(p.WorkflowID, p.EnvironmentID)}, "\x00")))
	return hex.EncodeToString(sum[:])
}

// breach is one breach to record.
type breach struct {
	policy    *ent.SLAPolicy
	objective string
	// runID and subject: for per-run objectives, the run (and the approval
	// request of maxApprovalWait); for completeBy, no run and the subject
	// "<policy>@<instant>"; both empty for window objectives. A breach
	// with either is recorded once (sla_breaches).
	runID, subject string
	details        map[string]any
	// workflowID and environmentID narrow the incident's scope below the
	// policy's (a release rollback: the release's workflow and
	// environment); nil: the policy's scope.
	workflowID, environmentID *string
}

// scope is the incident's workflow and environment.
func (b breach) scope() (workflowID, environmentID *string) {
	if b.workflowID != nil || b.environmentID != nil {
		return b.workflowID, b.environmentID
	}
	return b.policy.WorkflowID, b.policy.EnvironmentID
}

// key is the incident key of b: IncidentKey, or the same hash over the
// narrower scope.
func (b breach) key() string {
	if b.workflowID == nil && b.environmentID == nil {
		return IncidentKey(b.policy, b.objective)
	}
	sum := sha256.Sum256([]byte(strings.Join([]string{b.policy.ID, b.objective, scopeKey(b.workflowID, b.environmentID)}, "\x00")))
	return hex.EncodeToString(sum[:])
}

func severityOf(c *slaspec.Common) incident.Severity {
	return incident.Severity(c.Severity)
}

// openIncident returns the open incident of key, locked, or nil.
func openIncident(ctx context.Context, c *ent.Client, key string) (*ent.Incident, error) {
	inc, err := c.Incident.Query().Where(incident.Key(key), incident.StatusNEQ(incident.StatusResolved)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return inc, err
}

// record records b in c's tenant transaction: a per-run breach once (its
// unique row in sla_breaches; a repeat changes nothing and returns false),
// then it opens the objective's incident or joins the open one, writes the
// sla.breached webhook event, the audit entry of an opening, and tells the
// escalator. A window breach that continues an open incident only updates
// it (one sla.breached per opening).
func (s *Service) record(ctx context.Context, c *ent.Client, tenantID string, b breach, now time.Time) (bool, error) {
	cm := b.policy.Objectives.Common(b.objective)
	if cm == nil {
		return false, nil
	}
	key := b.key()
	workflowID, environmentID := b.scope()
	inc, err := openIncident(ctx, c, key)
	if err != nil {
		return false, err
	}
	incID := ids.New(ids.Incident)
	if inc != nil {
		incID = inc.ID
	}
	if b.runID != "" || b.subject != "" {
		res, err := c.ExecContext(ctx, `INSERT INTO sla_breaches (id, tenant_id, created_at, run_id, objective, subject, incident_id, policy_id, details)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, run_id, objective, subject) DO NOTHING`,
			ids.New(ids.SLABreach), tenantID, now, b.runID, b.objective, b.subject, incID, b.policy.ID, jsonOf(b.details))
		if err != nil {
			return false, fmt.Errorf("record breach: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return false, nil // recorded before
		}
	}
	opened := inc == nil
	if opened {
		samples := []string{}
		if b.runID != "" {
			samples = []string{b.runID}
		}
		inc, err = c.Incident.Create().SetID(incID).SetKey(key).SetPolicyID(b.policy.ID).SetObjective(b.objective).
			SetNillableWorkflowID(workflowID).SetNillableEnvironmentID(environmentID).
			SetPerRun(slaspec.PerRun(b.objective)).SetSeverity(severityOf(cm)).SetFirstSeenAt(now).SetLastSeenAt(now).
			SetSampleRunIds(samples).SetNillableEscalationPolicyID(cm.EscalationPolicyID).SetDetails(b.details).
			SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
		if err != nil {
			return false, fmt.Errorf("open incident: %w", err)
		}
		if err := audit.Record(ctx, c, "incident.open", "Incident", inc.ID, map[string]any{"objective": b.objective, "policyID": b.policy.ID, "runID": b.runID}); err != nil {
			return false, err
		}
	} else {
		u := inc.Update().AddCount(1).SetLastSeenAt(now).SetDetails(b.details).SetHealthyEvaluations(0)
		if b.runID != "" && len(inc.SampleRunIds) < maxSamples {
			u.AppendSampleRunIds([]string{b.runID})
		}
		if inc, err = u.Save(ctx); err != nil {
			return false, fmt.Errorf("join incident: %w", err)
		}
	}
	if opened || b.runID != "" || b.subject != "" {
		data := map[string]any{
			"incidentID": inc.ID, "incidentKey": inc.Key, "incidentStatus": string(inc.Status), "objective": b.objective,
			"policyID": b.policy.ID, "scope": string(ScopeOf(workflowID, environmentID)),
			"severity": string(inc.Severity), "count": inc.Count,
		}
		if workflowID != nil {
			data["workflowID"] = *workflowID
		}
		if environmentID != nil {
			data["environmentID"] = *environmentID
		}
		if b.runID != "" {
			data["runID"] = b.runID
		}
		if b.subject != "" && b.runID != "" {
			data["approvalID"] = b.subject
		}
		if len(b.details) > 0 {
			data["details"] = b.details
		}
		if _, err := s.o.Events.RecordEvent(ctx, c, tenantID, webhook.Event{Type: eventtype.SLABreached, Data: data}, now); err != nil {
			return false, err
		}
	}
	if opened && inc.EscalationPolicyID != nil && s.o.Escalator != nil {
		if err := s.o.Escalator.IncidentOpened(ctx, c, tenantID, inc, now); err != nil {
			return false, fmt.Errorf("escalate incident: %w", err)
		}
	}
	s.publishAfterCommit(ctx, tenantID, inc)
	return true, nil
}

// ReleaseRolledBack opens, in c's tenant transaction, the incident of a
// release that its analysis rolled back (or joins the open one of the same
// workflow and environment), under the policy whose releaseRollback
// objective applies there; with none, it does nothing. The breach is
// recorded once per release. It implements releases.Incidents.
func (s *Service) ReleaseRolledBack(ctx context.Context, c *ent.Client, tenantID, releaseID, workflowID, environmentID string, details map[string]any, now time.Time) error {
	policies, err := s.tenantPolicies(ctx, c, tenantID, -1)
	if err != nil {
		return err
	}
	p := Resolve(policies, workflowID, environmentID).Sources[slaspec.ReleaseRollback]
	if p == nil {
		return nil
	}
	d := map[string]any{"releaseID": releaseID}
	for k, v := range details {
		d[k] = v
	}
	_, err = s.record(ctx, c, tenantID, breach{policy: p, objective: slaspec.ReleaseRollback, subject: "release:" + releaseID,
		details: d, workflowID: &workflowID, environmentID: &environmentID}, now)
	return err
}

func (s *Service) publishAfterCommit(ctx context.Context, tenantID string, inc *ent.Incident) {
	if s.o.Publisher == nil {
		return
	}
	id, status := inc.ID, string(inc.Status)
	store.AfterCommit(ctx, func() { s.o.Publisher.PublishIncident(context.WithoutCancel(ctx), tenantID, id, status) })
}

// transitionData is the data of incident.* webhook events.
func transitionData(inc *ent.Incident, by string, note *string) map[string]any {
	data := map[string]any{"incidentID": inc.ID, "incidentKey": inc.Key, "objective": inc.Objective, "policyID": inc.PolicyID,
		"severity": string(inc.Severity), "status": string(inc.Status), "by": by, "count": inc.Count}
	if note != nil {
		data["note"] = *note
	}
	if inc.WorkflowID != nil {
		data["workflowID"] = *inc.WorkflowID
	}
	if inc.EnvironmentID != nil {
		data["environmentID"] = *inc.EnvironmentID
	}
	return data
}

const maxNote = 2000

// AcknowledgeIncident marks a triggered incident acknowledged (operators
// and admins): someone is on it. CONFLICT when it is not triggered.
func (s *Service) AcknowledgeIncident(ctx context.Context, id string, note *string) (*ent.Incident, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	if note != nil && len(*note) > maxNote {
		return nil, errs.Invalid("note", "must be at most %d characters", maxNote)
	}
	inc, err := c.Incident.Query().Where(incident.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("incident", id)
	} else if err != nil {
		return nil, err
	}
	if inc.Status != incident.StatusTriggered {
		return nil, errs.E(errs.Conflict, "incident %s is %s; only a triggered incident can be acknowledged", id, inc.Status)
	}
	now := s.now()
	u := inc.Update().SetStatus(incident.StatusAcknowledged).SetAcknowledgedBy(v.Subject).SetAcknowledgedAt(now)
	if note != nil {
		u.SetNote(*note)
	}
	if inc, err = u.Save(ctx); err != nil {
		return nil, err
	}
	if _, err := s.o.Events.RecordEvent(ctx, c, v.TenantID, webhook.Event{Type: eventtype.IncidentAcknowledged, Data: transitionData(inc, v.Subject, note)}, now); err != nil {
		return nil, err
	}
	if inc.EscalationPolicyID != nil && s.o.Escalator != nil {
		if err := s.o.Escalator.IncidentAcknowledged(ctx, c, v.TenantID, inc, v.Subject, now); err != nil {
			return nil, err
		}
	}
	s.publishAfterCommit(ctx, v.TenantID, inc)
	return inc, audit.Record(ctx, c, "incident.acknowledge", "Incident", id, map[string]any{"note": note})
}

// ResolveIncident resolves a triggered or acknowledged incident (operators
// and admins). CONFLICT when it is resolved already.
func (s *Service) ResolveIncident(ctx context.Context, id string, note *string) (*ent.Incident, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	if note != nil && len(*note) > maxNote {
		return nil, errs.Invalid("note", "must be at most %d characters", maxNote)
	}
	inc, err := c.Incident.Query().Where(incident.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("incident", id)
	} else if err != nil {
		return nil, err
	}
	if inc.Status == incident.StatusResolved {
		return nil, errs.E(errs.Conflict, "incident %s is already resolved", id)
	}
	inc, err = s.resolve(ctx, c, v.TenantID, inc, v.Subject, note)
	if err != nil {
		return nil, err
	}
	return inc, audit.Record(ctx, c, "incident.resolve", "Incident", id, map[string]any{"note": note})
}

// resolve resolves an open incident and tells webhooks, the escalator and
// subscribers; the caller audits.
func (s *Service) resolve(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, by string, note *string) (*ent.Incident, error) {
	now := s.now()
	u := inc.Update().SetStatus(incident.StatusResolved).SetResolvedBy(by).SetResolvedAt(now)
	if note != nil {
		u.SetNote(*note)
	}
	inc, err := u.Save(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := s.o.Events.RecordEvent(ctx, c, tenantID, webhook.Event{Type: eventtype.IncidentResolved, Data: transitionData(inc, by, note)}, now); err != nil {
		return nil, err
	}
	if inc.EscalationPolicyID != nil && s.o.Escalator != nil {
		if err := s.o.Escalator.IncidentResolved(ctx, c, tenantID, inc, by, now); err != nil {
			return nil, err
		}
	}
	s.publishAfterCommit(ctx, tenantID, inc)
	return inc, nil
}

// IncidentFilter is incidents(where:).
type IncidentFilter struct {
	Status        *incident.Status
	Severity      *incident.Severity
	WorkflowID    *string
	EnvironmentID *string
}

// Incidents returns the query of the tenant's incidents matching f (every
// role); the caller paginates.
func (s *Service) Incidents(ctx context.Context, f IncidentFilter) (*ent.IncidentQuery, error) {
	_, c, err := access.Authorize(ctx, viewer.RoleEditor, viewer.RoleOperator, viewer.RoleViewer)
	if err != nil {
		return nil, err
	}
	q := c.Incident.Query()
	if f.Status != nil {
		q.Where(incident.StatusEQ(*f.Status))
	}
	if f.Severity != nil {
		q.Where(incident.SeverityEQ(*f.Severity))
	}
	if f.WorkflowID != nil {
		q.Where(incident.WorkflowID(*f.WorkflowID))
	}
	if f.EnvironmentID != nil {
		q.Where(incident.EnvironmentID(*f.EnvironmentID))
	}
	return q, nil
}
