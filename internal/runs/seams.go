package runs

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
)

// The state machine's doors to its neighbours: the queue (a
// tasks.Dispatcher), live subscribers (Publisher) and the webhook outbox
// (Outbox). Each is told about a change only once it is committed, or, for
// the outbox, inside the transaction that commits it.

// Publisher fans committed run changes out to subscribers in every process.
// Delivery is best effort: subscribers fill gaps from the event log.
type Publisher interface {
	Publish(ctx context.Context, n RunNotice)
}

// RunNotice tells live subscribers that a run changed: its committed events
// (in seq order) and its current status and cost.
type RunNotice struct {
	TenantID     string
	RunID        string
	Status       string
	CostMicroUSD int64
	Events       []*ent.RunEvent
}

// Outbox records the outbound notifications of a run's new events in the
// transaction (c) that commits them, and returns the tasks that deliver
// them, which the state machine sends after commit. endpointsVersion is
// the tenant's webhooks_version read with the run's lock, or -1 if unknown.
type Outbox interface {
	Record(ctx context.Context, c *ent.Client, r *ent.Run, endpointsVersion int64, events []*ent.RunEvent, now time.Time) ([]tasks.Task, error)
}

// stepTask is the task that wakes a worker for a step's attempt. A
// transform's task is marked CheckFirst; markCheckFirst keeps the mark only
// where another delivery's batch can have run the step (runReadyTransforms).
func stepTask(tenantID, runID, stepID, stepType, attemptID string, at time.Time) tasks.Task {
	return tasks.Task{Kind: tasks.KindStep, TenantID: tenantID, RunID: runID, StepID: stepID, ID: attemptID, At: at,
		CheckFirst: stepType == definition.StepTransform}
}

// dispatchAfterCommit sends tasks once the transaction in ctx has committed.
func (e *Service) dispatchAfterCommit(ctx context.Context, ts []tasks.Task) {
	tasks.DispatchAfterCommit(ctx, e.dispatcher, e.log, ts)
}

// publishAfterCommit tells subscribers about a run change once it is durable.
func (e *Service) publishAfterCommit(ctx context.Context, n RunNotice) {
	if e.publisher == nil {
		return
	}
	store.AfterCommit(ctx, func() { e.publisher.Publish(context.WithoutCancel(ctx), n) })
}
