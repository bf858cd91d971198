package bulk

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/ent/bulkoperationitem"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The processor is responsible for acting on the pending items of open
// operations. Everything it knows is in Postgres: an item is PENDING
// until the transaction that acts on its run also settles it (SUCCEEDED,
// FAILED or SKIPPED) and counts it on its operation, so a worker killed
// mid-pass loses that transaction and the next pass, in whichever worker,
// acts on the item again; nothing is acted on twice. A Redis wipe loses
// nothing (Redis only carries the step tasks a resume or replay sends,
// which the reconciler rebuilds). It runs under store.Singleton
// ("bulk-operations"), so the rate holds across workers, and the row
// locks keep it right even without that.

// ProcessorName is the processor's singleton (advisory lock) name.
const ProcessorName = "bulk-operations"

// tick is how often the processor passes while operations are open; each
// pass acts on at most Rate*tick runs.
const tick = 200 * time.Millisecond

// RunProcessor processes open operations until ctx ends.
func (s *Service) RunProcessor(ctx context.Context, db *sql.DB) {
	open := 0
	wait := func() time.Duration {
		busy := open > 0
		open = 0 // a pass that does not run (another worker holds the job) finds none
		if busy {
			return min(s.o.Interval, tick)
		}
		return s.o.Interval
	}
	store.RunSingleton(ctx, db, ProcessorName, s.log, wait, func(ctx context.Context) error {
		var err error
		open, err = s.Process(ctx)
		return err
	})
}

// Process makes one pass: it acts on up to Rate*tick pending items,
// shared among the tenants with open operations (a pass starts with the
// tenant after the one the last pass started with, so that with more
// tenants than items per pass each gets its turn), and returns how many
// tenants had one. Tests call it directly.
func (s *Service) Process(ctx context.Context) (int, error) {
	tenants, err := store.TenantIDsOf(ctx, s.o.Client, store.TenantsBulk)
	if err != nil || len(tenants) == 0 {
		return 0, err
	}
	budget := max(1, int(float64(s.o.Rate)*tick.Seconds()))
	share := max(1, budget/len(tenants))
	start := int(s.turn.Add(1)) % len(tenants)
	order := append(tenants[start:len(tenants):len(tenants)], tenants[:start]...)
	return len(tenants), store.EachTenant(ctx, order, func(tid string) error {
		if budget <= 0 {
			return nil
		}
		n, err := s.processTenant(ctx, tid, min(share, budget))
		budget -= n
		return err
	})
}

// processTenant acts on up to budget items of the tenant's open
// operations, oldest operation first, and returns how many it settled.
func (s *Service) processTenant(ctx context.Context, tenantID string, budget int) (int, error) {
	var open []*ent.BulkOperation
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		var err error
		open, err = ent.FromContext(ctx).BulkOperation.Query().
			Where(bulkoperation.FinishedAtIsNil()).Order(ent.Asc(bulkoperation.FieldCreatedAt)).All(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	settled := 0
	for _, op := range open {
		if settled >= budget {
			break
		}
		n, err := s.processOperation(ctx, tenantID, op, budget-settled)
		settled += n
		if err != nil {
			return settled, fmt.Errorf("bulk operation %s: %w", op.ID, err)
		}
	}
	return settled, nil
}

// opContext is the viewer an operation acts as: Sluice on behalf of its
// creator, within the creator's environment when the creator was
// restricted to one.
func opContext(ctx context.Context, tenantID string, op *ent.BulkOperation) context.Context {
	return viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: Subject(op.ID), System: true, EnvironmentID: op.EnvironmentScope})
}

// processOperation acts on up to budget pending items of op, one
// transaction each, and completes op when none is left. It returns how
// many items it settled.
func (s *Service) processOperation(ctx context.Context, tenantID string, op *ent.BulkOperation, budget int) (int, error) {
	vctx := opContext(ctx, tenantID, op)
	var pending []string
	err := store.InTenant(vctx, s.o.Client, func(ctx context.Context) error {
		var err error
		pending, err = ent.FromContext(ctx).BulkOperationItem.Query().
			Where(bulkoperationitem.OperationID(op.ID), bulkoperationitem.StatusEQ(bulkoperationitem.StatusPending)).
			Order(ent.Asc(bulkoperationitem.FieldPosition)).Limit(budget).IDs(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	settled := 0
	defer func() {
		if settled > 0 && s.o.Publisher != nil {
			// Once per pass, not per item: subscribers read the operation back.
			s.o.Publisher.PublishBulkOperation(context.WithoutCancel(ctx), tenantID, op.ID, string(bulkoperation.StatusRunning))
		}
	}()
	for _, id := range pending {
		if err := ctx.Err(); err != nil {
			return settled, err
		}
		ok, err := s.actOn(vctx, op, id)
		if err != nil {
			return settled, err
		}
		if ok {
			settled++
		}
	}
	if len(pending) < budget {
		return settled, s.complete(vctx, tenantID, op.ID)
	}
	return settled, nil
}

// actOn acts on one item's run and settles the item, in one transaction.
// When the action is refused (the run is not in a state for it, is gone,
// or the options do not fit it), that transaction is rolled back and the
// item is settled in another with why. It reports whether it settled the
// item (false: another pass had, or the operation ended).
func (s *Service) actOn(ctx context.Context, op *ent.BulkOperation, itemID string) (bool, error) {
	var refusal error
	settled := false
	err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		item, live, err := s.lockItem(ctx, c, op.ID, itemID)
		if err != nil || !live {
			return err
		}
		result, err := s.act(ctx, op, item)
		if err != nil {
			refusal = err
			return err // roll back whatever the action wrote
		}
		settled = true
		return s.settle(ctx, c, op.ID, item, bulkoperationitem.StatusSucceeded, result, "")
	})
	if refusal == nil {
		return settled, err
	}
	status, message := outcomeOf(refusal)
	if status == "" {
		// Unexpected (an outage, a bug): the item stays pending for the
		// next pass, up to maxTries.
		s.log.WarnContext(ctx, "bulk operation item", "operation", op.ID, "item", itemID, "err", refusal)
	}
	err = store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		item, live, err := s.lockItem(ctx, c, op.ID, itemID)
		if err != nil || !live {
			return err
		}
		if status == "" {
			if item.Tries+1 < maxTries {
				return c.BulkOperationItem.UpdateOneID(item.ID).AddTries(1).SetUpdatedAt(s.now()).Exec(ctx)
			}
			status, message = bulkoperationitem.StatusFailed, fmt.Sprintf("gave up after %d tries: %v", maxTries, refusal)
		}
		settled = true
		return s.settle(ctx, c, op.ID, item, status, nil, message)
	})
	return settled, err
}

// lockItem locks the operation (serialising with cancelBulkOperation) and
// then the item; live is false when the operation has finished or the
// item is settled already.
func (s *Service) lockItem(ctx context.Context, c *ent.Client, opID, itemID string) (*ent.BulkOperationItem, bool, error) {
	op, err := c.BulkOperation.Query().Where(bulkoperation.ID(opID)).ForUpdate().Only(ctx)
	if err != nil {
		return nil, false, err
	}
	if op.FinishedAt != nil {
		return nil, false, nil
	}
	item, err := c.BulkOperationItem.Query().
		Where(bulkoperationitem.ID(itemID), bulkoperationitem.StatusEQ(bulkoperationitem.StatusPending)).
		ForUpdate(entsql.WithLockAction(entsql.SkipLocked)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, false, nil
	}
	return item, err == nil, err
}

// act applies the operation's action to the item's run in the caller's
// transaction, and returns the run it started (a replay's), if any.
func (s *Service) act(ctx context.Context, op *ent.BulkOperation, item *ent.BulkOperationItem) (*string, error) {
	meta := map[string]any{"bulkOperationID": op.ID, "requestedBy": op.CreatedBy}
	o := optionsOf(op.Options)
	switch op.Action {
	case bulkoperation.ActionCancel:
		_, err := s.o.Runs.CancelRunFor(ctx, item.RunID, meta)
		return nil, err
	case bulkoperation.ActionResume:
		_, err := s.o.Runs.ResumeRunWith(ctx, runs.ResumeInput{ID: item.RunID, VersionID: o.VersionID, InputPatch: o.InputPatch,
			AuditMeta: meta, Path: "options"})
		return nil, err
	case bulkoperation.ActionReplay:
		key := ReplayKey(op.ID, item.RunID)
		r, err := s.o.Runs.ReplayRun(ctx, runs.ReplayInput{RunID: item.RunID, VersionID: o.VersionID, Sandbox: o.Sandbox,
			InputPatch: o.InputPatch, IdempotencyKey: &key, AuditMeta: meta, Path: "options"})
		if err != nil {
			return nil, err
		}
		return &r.ID, nil
	}
	return nil, fmt.Errorf("unknown action %q", op.Action)
}

// Priorities (fair dispatch): a replay's new run has ReplayPriority (5,
// last) unless asked otherwise, so a bulk replay gives way to the runs users
// start; a resumed run keeps the priority it was started with.

// outcomeOf says how a refused action settles its item: SKIPPED when the
// run is not in a state for the action or is gone (CONFLICT, NOT_FOUND),
// FAILED when the options do not fit it (VALIDATION, FORBIDDEN); "" for
// anything else (retried).
func outcomeOf(err error) (bulkoperationitem.Status, string) {
	var e *errs.Error
	if !errors.As(err, &e) {
		return "", ""
	}
	switch errs.CodeOf(err) {
	case errs.Conflict, errs.NotFound:
		return bulkoperationitem.StatusSkipped, err.Error()
	case errs.Validation, errs.Forbidden:
		return bulkoperationitem.StatusFailed, err.Error()
	}
	return "", ""
}

// settle records an item's outcome and counts it on its operation.
func (s *Service) settle(ctx context.Context, c *ent.Client, opID string, item *ent.BulkOperationItem, status bulkoperationitem.Status, resultRun *string, message string) error {
	now := s.now()
	u := c.BulkOperationItem.UpdateOneID(item.ID).SetStatus(status).SetActedAt(now).SetUpdatedAt(now).SetNillableResultRunID(resultRun)
	if message != "" {
		u.SetMessage(truncate(message, 2000))
	}
	if err := u.Exec(ctx); err != nil {
		return err
	}
	ou := c.BulkOperation.UpdateOneID(opID).AddDone(1).SetUpdatedAt(now).SetStatus(bulkoperation.StatusRunning)
	switch status {
	case bulkoperationitem.StatusSucceeded:
		ou.AddSucceeded(1)
	case bulkoperationitem.StatusFailed:
		ou.AddFailed(1)
	default:
		ou.AddSkipped(1)
	}
	return ou.Exec(ctx)
}

// complete ends an operation with no pending item left.
func (s *Service) complete(ctx context.Context, tenantID, opID string) error {
	return store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		op, err := c.BulkOperation.Query().Where(bulkoperation.ID(opID)).ForUpdate().Only(ctx)
		if err != nil || op.FinishedAt != nil {
			return err
		}
		left, err := c.BulkOperationItem.Query().
			Where(bulkoperationitem.OperationID(opID), bulkoperationitem.StatusEQ(bulkoperationitem.StatusPending)).Exist(ctx)
		if err != nil || left {
			return err
		}
		now := s.now()
		if err := c.BulkOperation.UpdateOneID(opID).SetStatus(bulkoperation.StatusCompleted).SetFinishedAt(now).SetUpdatedAt(now).Exec(ctx); err != nil {
			return err
		}
		if err := c.Tenant.Update().Where(tenant.ID(tenantID)).AddOpenBulkOperations(-1).
			Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
			return fmt.Errorf("count open bulk operations: %w", err)
		}
		s.publishAfterCommit(ctx, tenantID, opID, string(bulkoperation.StatusCompleted))
		return nil
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
