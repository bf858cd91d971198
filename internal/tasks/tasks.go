// Package tasks defines the wake-ups Sluice puts on its queue and the seam
// that sends them: a Task names work Postgres already records as due, and a
// Dispatcher delivers it to a worker. Losing a task is harmless (the
// reconciler re-sends whatever is past due); sending one twice is refused
// by the queue or by the fences of the work it names.
package tasks

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/internal/store"
)

// Task kinds carried by the queue. They are stable names: never rename one.
const (
	KindStep            = "step.execute"
	KindApprovalTimeout = "approval.timeout"
	KindWebhook         = "webhook.deliver"
	KindMapItem         = "map.item"
	KindEscalation      = "escalation.level"
	KindPagerDuty       = "pagerduty.send"
)

// Task is a wake-up for work Postgres already records as due.
type Task struct {
	Kind     string
	TenantID string
	RunID    string
	StepID   string // of a step task
	// VersionID is the workflow version of a step task's run, when known:
	// a worker that has the version's definition cached reads what the
	// claim needs with the run's lock, in one round trip.
	VersionID string
	// CheckFirst marks a transform step's task when a sibling transform was
	// made ready in the same commit: another delivery may run the step in
	// its batch first, so the worker looks before it locks the run.
	CheckFirst bool
	// ID is the attempt, approval or webhook delivery id; it is also the
	// queue task id, so a duplicate enqueue of the same work is rejected by
	// the queue.
	ID string
	At time.Time
	// Variant, when set, gives the queue task an id of its own for the same
	// work: a takeover of a running attempt whose worker went silent, or
	// the next attempt of a webhook delivery.
	Variant string
}

// Dispatcher puts tasks on the queue.
type Dispatcher interface {
	Dispatch(ctx context.Context, tasks []Task) error
}

// DispatchAfterCommit sends ts through d once the transaction in ctx has
// committed, never before (a worker must find the state a task refers to),
// and never if it rolls back. A failed send is logged: the reconciler sends
// the work again once it is past due. d may be nil (nothing is sent).
func DispatchAfterCommit(ctx context.Context, d Dispatcher, log *slog.Logger, ts []Task) {
	if len(ts) == 0 || d == nil {
		return
	}
	store.AfterCommit(ctx, func() {
		// The request may be finishing; the send must not die with it.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := d.Dispatch(dctx, ts); err != nil {
			log.WarnContext(ctx, "dispatch failed; the reconciler will retry", "err", err, "tasks", len(ts))
		}
	})
}
