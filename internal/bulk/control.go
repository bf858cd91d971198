package bulk

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/ent/bulkoperationitem"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Get returns the operation with id, or NOT_FOUND when there is none the
// viewer may see (another tenant's, or, for a viewer restricted to one
// environment, one created outside it).
func Get(ctx context.Context, id string) (*ent.BulkOperation, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	op, err := c.BulkOperation.Get(ctx, id)
	if ent.IsNotFound(err) || (err == nil && !visible(v, op)) {
		return nil, errs.NotFoundf("bulk operation", id)
	}
	return op, err
}

func visible(v *viewer.Viewer, op *ent.BulkOperation) bool {
	return v.EnvironmentID == "" || v.System || op.EnvironmentScope == v.EnvironmentID
}

// List is the query of the operations the viewer may see, newest first.
func List(ctx context.Context, status *bulkoperation.Status) (*ent.BulkOperationQuery, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	q := c.BulkOperation.Query()
	if v.EnvironmentID != "" && !v.System {
		q.Where(bulkoperation.EnvironmentScope(v.EnvironmentID))
	}
	if status != nil {
		q.Where(bulkoperation.StatusEQ(*status))
	}
	return q, nil
}

// Cancel stops an open operation: items not acted on yet are skipped;
// runs already acted on stay as they are. An operation that has finished
// is CONFLICT.
func (s *Service) Cancel(ctx context.Context, id string) (*ent.BulkOperation, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	op, err := c.BulkOperation.Query().Where(bulkoperation.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) || (err == nil && !visible(v, op)) {
		return nil, errs.NotFoundf("bulk operation", id)
	}
	if err != nil {
		return nil, err
	}
	if op.FinishedAt != nil {
		return nil, errs.E(errs.Conflict, "bulk operation %s is already %s", id, op.Status)
	}
	now := s.now()
	n, err := c.BulkOperationItem.Update().
		Where(bulkoperationitem.OperationID(id), bulkoperationitem.StatusEQ(bulkoperationitem.StatusPending)).
		SetStatus(bulkoperationitem.StatusSkipped).SetMessage("the operation was cancelled by " + v.Subject).SetUpdatedAt(now).Save(ctx)
	if err != nil {
		return nil, err
	}
	op, err = c.BulkOperation.UpdateOneID(id).SetStatus(bulkoperation.StatusCancelled).SetCancelledBy(v.Subject).
		SetFinishedAt(now).SetUpdatedAt(now).AddSkipped(n).AddDone(n).Save(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Tenant.Update().Where(tenant.ID(v.TenantID)).AddOpenBulkOperations(-1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count open bulk operations: %w", err)
	}
	if err := audit.Record(ctx, c, "bulk_operation.cancel", "BulkOperation", id, map[string]any{"skipped": n, "done": op.Done - n}); err != nil {
		return nil, err
	}
	s.publishAfterCommit(ctx, v.TenantID, id, string(op.Status))
	return op, nil
}

// Load reads an operation in a transaction of its own as the viewer in
// ctx (subscriptions re-read it on each notice).
func Load(ctx context.Context, client *ent.Client, id string) (*ent.BulkOperation, error) {
	var op *ent.BulkOperation
	err := store.InTenant(ctx, client, func(ctx context.Context) error {
		var err error
		op, err = Get(ctx, id)
		return err
	})
	return op, err
}
