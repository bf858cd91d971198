package escalation

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/errs"
)

// Incidents is the Service as the SLA side's escalator (sla.Escalator): an
// incident escalates under the escalation policy its objective named, from
// the transaction that opens it; acknowledging and resolving it do the same
// to its escalation (and to PagerDuty), in the incident's transaction.
type Incidents struct{ S *Service }

// IncidentOpened starts the incident's escalation. A policy deleted since
// the objective named it starts none (logged): the breach is still
// recorded and announced.
func (a Incidents) IncidentOpened(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, now time.Time) error {
	if inc.EscalationPolicyID == nil || *inc.EscalationPolicyID == "" {
		return nil
	}
	details := map[string]any{"incidentID": inc.ID, "objective": inc.Objective, "slaPolicyID": inc.PolicyID}
	if inc.WorkflowID != nil {
		details["workflowID"] = *inc.WorkflowID
	}
	if inc.EnvironmentID != nil {
		details["environmentID"] = *inc.EnvironmentID
	}
	_, err := a.S.Start(ctx, c, tenantID, *inc.EscalationPolicyID, Subject{
		Kind:     KindIncident,
		ID:       inc.ID,
		DedupKey: inc.Key,
		Summary:  incidentSummary(inc),
		Severity: strings.ToLower(inc.Severity.String()),
		Details:  details,
	}, now)
	if errs.CodeOf(err) == errs.NotFound {
		a.S.log.WarnContext(ctx, "an SLA objective names an escalation policy that no longer exists", "tenant_id", tenantID,
			"incident_id", inc.ID, "policy_id", *inc.EscalationPolicyID)
		return nil
	}
	return err
}

// IncidentAcknowledged acknowledges the incident's escalation, if any.
func (a Incidents) IncidentAcknowledged(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, by string, now time.Time) error {
	return a.S.Acknowledge(ctx, c, tenantID, KindIncident, inc.ID, by, now)
}

// IncidentResolved resolves the incident's escalation, if any.
func (a Incidents) IncidentResolved(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, by string, now time.Time) error {
	return a.S.Resolve(ctx, c, tenantID, KindIncident, inc.ID, by, now)
}

// PolicyExists reports whether the policy is visible in c's tenant.
func (a Incidents) PolicyExists(ctx context.Context, c *ent.Client, id string) (bool, error) {
	return a.S.PolicyExists(ctx, c, id)
}

// incidentSummary is what a person paged about inc reads first.
func incidentSummary(inc *ent.Incident) string {
	scope := "the tenant"
	switch {
	case inc.WorkflowID != nil && inc.EnvironmentID != nil:
		scope = fmt.Sprintf("workflow %s in environment %s", *inc.WorkflowID, *inc.EnvironmentID)
	case inc.WorkflowID != nil:
		scope = "workflow " + *inc.WorkflowID
	case inc.EnvironmentID != nil:
		scope = "environment " + *inc.EnvironmentID
	}
	return fmt.Sprintf("SLA %s breached for %s (incident %s)", inc.Objective, scope, inc.ID)
}
