package engine

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/definition"
)

// Task kinds carried by the queue. They are stable names: never rename one.
const (
	TaskStep            = "step.execute"
	TaskApprovalTimeout = "approval.timeout"
	TaskWebhook         = "webhook.deliver"
)

// Task is a wake-up for work Postgres already records as due. Losing one is
// harmless: the reconciler re-sends anything past due.
type Task struct {
	Kind     string
	TenantID string
	RunID    string
	StepID   string // of a step task
	// Batched marks a transform's task: another delivery may run the step
	// in a batch first (see runReadyTransforms).
	Batched bool
	// ID is the attempt or approval id; it is also the queue task id, so a
	// duplicate enqueue of the same work is rejected by the queue.
	ID string
	At time.Time
	// Variant, when set, gives the queue task an id of its own for the same
	// work: a takeover of a running attempt whose worker went silent (see
	// DueTasks), or the next attempt of a webhook delivery.
	Variant string
}

// stepTask is the task that wakes a worker for a step's attempt. A
// transform's task is marked Batched: another delivery may run it in a
// batch first (runReadyTransforms); markBatched keeps the mark only where
// that can happen.
func stepTask(tenantID, runID, stepID, stepType, attemptID string, at time.Time) Task {
	return Task{Kind: TaskStep, TenantID: tenantID, RunID: runID, StepID: stepID, ID: attemptID, At: at,
		Batched: stepType == definition.StepTransform}
}

// Dispatcher puts tasks on the queue.
type Dispatcher interface {
	Dispatch(ctx context.Context, tasks []Task) error
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

// Publisher fans committed run changes out to subscribers in every process.
// Delivery is best effort: subscribers fill gaps from the event log.
type Publisher interface {
	Publish(ctx context.Context, n RunNotice)
}

// dispatchAfterCommit sends tasks once the transaction in ctx has committed,
// never before: a worker must find the state the task refers to.
func (e *Engine) dispatchAfterCommit(ctx context.Context, tasks []Task) {
	if len(tasks) == 0 || e.dispatcher == nil {
		return
	}
	afterCommit(ctx, func() {
		// The request may be finishing; the send must not die with it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := e.dispatcher.Dispatch(dctx, tasks); err != nil {
			e.log.WarnContext(ctx, "dispatch failed; the reconciler will retry", "err", err, "tasks", len(tasks))
		}
	})
}

// publishAfterCommit tells subscribers about a run change once it is durable.
func (e *Engine) publishAfterCommit(ctx context.Context, n RunNotice) {
	if e.publisher == nil {
		return
	}
	afterCommit(ctx, func() { e.publisher.Publish(context.WithoutCancel(ctx), n) })
}

// afterCommit runs fn after the transaction in ctx commits (at once when
// there is none).
func afterCommit(ctx context.Context, fn func()) {
	send := fn
	tx := ent.TxFromContext(ctx)
	if tx == nil {
		send()
		return
	}
	tx.OnCommit(func(next ent.Committer) ent.Committer {
		return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
			if err := next.Commit(ctx, tx); err != nil {
				return err
			}
			send()
			return nil
		})
	})
}
