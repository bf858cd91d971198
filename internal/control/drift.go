package control

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/driftchange"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// MaxDriftReport bounds the changes driftReport returns (the newest).
const MaxDriftReport = 500

// DriftReport lists the response changes seen on a workflow's http steps,
// every version, oldest first: the step, the path, the kind of change,
// whether it broke the step (schema_drift), and the first run that saw it.
// Another tenant's workflow reads as one that does not exist.
func (s *Service) DriftReport(ctx context.Context, workflowID string) ([]*ent.DriftChange, error) {
	_, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if !ids.Valid(workflowID, ids.Workflow) {
		return nil, errs.Invalid("workflowID", "not a workflow id")
	}
	if _, err := c.Workflow.Get(ctx, workflowID); ent.IsNotFound(err) {
		return nil, errs.E(errs.NotFound, "workflow not found")
	} else if err != nil {
		return nil, err
	}
	return c.DriftChange.Query().Where(driftchange.WorkflowID(workflowID)).
		Order(ent.Asc(driftchange.FieldCreatedAt), ent.Asc(driftchange.FieldID)).Limit(MaxDriftReport).All(ctx)
}
