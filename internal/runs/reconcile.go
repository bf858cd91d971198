package runs

import (
	"context"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// ReconcileOptions tune how late work must be before it is re-sent.
type ReconcileOptions struct {
	// Grace is how long past due a queued step may be before it is re-sent.
	// If zero, 2s.
	Grace time.Duration
	// Stale is how long a running step's heartbeat may be silent before it
	// is presumed lost. If zero, the Service's (Options.HeartbeatStale).
	Stale time.Duration
}

// GraceOrDefault is Grace, or 2 s when it is zero.
func (o ReconcileOptions) GraceOrDefault() time.Duration {
	if o.Grace == 0 {
		return 2 * time.Second
	}
	return o.Grace
}

// DueTasks lists the tasks Postgres says are due in one tenant: steps whose
// attempt is past due, steps running for too long, approvals past expiry,
// map items past due or silent, and workflow steps whose child finished
// without telling them; all read in one round trip (dueRows).
// Sending them again is safe: the queue rejects duplicates of live tasks and
// the fences reject duplicates of finished ones.
func (e *Service) DueTasks(ctx context.Context, tenantID string, o ReconcileOptions) ([]tasks.Task, error) {
	o.Grace = o.GraceOrDefault()
	if o.Stale == 0 {
		o.Stale = e.stale
	}
	now := e.now()
	var due []tasks.Task
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), e.client, func(ctx context.Context) error {
		d, err := dueRows(ctx, tenantID, now.Add(-o.Grace), now.Add(-o.Stale), now)
		if err != nil {
			return err
		}
		for _, s := range d.late {
			due = append(due, stepTask(tenantID, s.runID, s.stepID, s.stepType, s.attemptID, now))
		}
		for _, s := range d.running {
			// The dead holder's task may still sit "active" in the queue
			// under the attempt's id until its lease runs out; a takeover
			// gets an id of its own (one per silent heartbeat).
			t := stepTask(tenantID, s.runID, s.stepID, s.stepType, s.attemptID, now)
			t.Variant = strconv.FormatInt(s.updatedAt.UnixMilli(), 36)
			due = append(due, t)
		}
		for _, it := range d.items {
			due = append(due, dueItemTask(tenantID, it, now))
		}
		for _, s := range d.children {
			// A child run finished and its parent's step still waits: the
			// task telling the parent was lost (child.go).
			t := stepTask(tenantID, s.runID, s.stepID, s.stepType, s.attemptID, now)
			t.Variant = "c" + strconv.FormatInt(now.UnixMilli(), 36)
			due = append(due, t)
		}
		for _, a := range d.expired {
			due = append(due, tasks.Task{Kind: tasks.KindApprovalTimeout, TenantID: tenantID, RunID: a.runID, ID: a.id, At: now})
		}
		return nil
	})
	return due, err
}

// TenantIDs lists every tenant, for the reconciler.
func (e *Service) TenantIDs(ctx context.Context) ([]string, error) {
	return store.TenantIDs(ctx, e.client)
}
