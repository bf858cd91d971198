// Package tasks defines the wake-ups Sluice puts on its queue and the seam
// that sends them: a Task names work Postgres already records as due, and a
// Dispatcher delivers it to a worker. Losing a task is harmless (the
// reconciler re-sends whatever is past due); sending one twice is refused
// by the queue or by the fences of the work it names.
package tasks

import (
	"context"
	"time"
)

// Task kinds carried by the queue. They are stable names: never rename one.
const (
	KindStep            = "step.execute"
	KindApprovalTimeout = "approval.timeout"
	KindWebhook         = "webhook.deliver"
)

// Task is a wake-up for work Postgres already records as due.
type Task struct {
	Kind     string
	TenantID string
	RunID    string
	StepID   string // of a step task
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
