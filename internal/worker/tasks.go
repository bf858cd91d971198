// Package worker carries Sluice's work over asynq: the Dispatcher that
// enqueues tasks after commit, the asynq server whose handlers call the
// run state machine and the webhook deliverer, and the reconciler that
// re-sends whatever Postgres says is due. Redis holds only wake-ups; losing it loses nothing.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/tasks"
)

// Queue names and their weights. Steps get most of the capacity; timers
// (approval timeouts) are rare but must not starve.
const (
	QueueSteps    = "steps"
	QueueTimers   = "timers"
	QueueWebhooks = "webhooks"
)

// Webhook deliveries have their own queue so a slow receiver never delays steps.
var queueWeights = map[string]int{QueueSteps: 6, QueueWebhooks: 2, QueueTimers: 2}

// payload is the body of every task. V is the payload version: handlers
// accept older versions forever.
type payload struct {
	V          int    `json:"v"`
	TenantID   string `json:"tenantID"`
	RunID      string `json:"runID"`
	StepID     string `json:"stepID,omitempty"`    // step tasks; absent in older ones
	VersionID  string `json:"versionID,omitempty"` // step tasks; absent in older ones
	CheckFirst bool   `json:"batched,omitempty"`   // wire name from before the rename; never change it
	ID         string `json:"id"`
}

// encodePayload is the body of t's queue task (and of its wake-up).
func encodePayload(t tasks.Task) []byte {
	b, _ := json.Marshal(payload{V: 1, TenantID: t.TenantID, RunID: t.RunID, StepID: t.StepID, VersionID: t.VersionID, ID: t.ID, CheckFirst: t.CheckFirst})
	return b
}

// attempt is the step attempt a step task names.
func (p payload) attempt() runs.AttemptRef {
	return runs.AttemptRef{RunID: p.RunID, StepID: p.StepID, VersionID: p.VersionID, ID: p.ID, CheckFirst: p.CheckFirst}
}

// Dispatcher enqueues tasks on asynq.
type Dispatcher struct {
	client *asynq.Client
	rdb    redis.UniversalClient // for wake-ups (wake.go); nil disables them
}

// NewDispatcher wraps an asynq client; rdb, the same Redis, carries
// wake-ups for lone ready steps (nil disables them).
func NewDispatcher(c *asynq.Client, rdb redis.UniversalClient) *Dispatcher {
	return &Dispatcher{client: c, rdb: rdb}
}

// Dispatch enqueues tasks; a task whose id is already queued is skipped.
func (d *Dispatcher) Dispatch(ctx context.Context, ts []tasks.Task) error {
	return d.dispatch(ctx, ts, nil)
}

// dispatch is Dispatch; with an inspector (the reconciler's), a task whose
// id is held by an archived task (asynq archives a task once its retries
// are exhausted, e.g. through a long Postgres outage) is replaced: the
// archived task will never run, and while it exists its id rejects every
// re-send, which would strand the run.
func (d *Dispatcher) dispatch(ctx context.Context, ts []tasks.Task, insp *asynq.Inspector) error {
	if len(ts) == 1 {
		t := ts[0]
		err := d.enqueue(ctx, t, insp)
		if err == nil && insp == nil && t.Kind == tasks.KindStep && t.Variant == "" && !t.At.After(time.Now()) {
			d.wake(ctx, t)
		}
		return err
	}
	// A fan-out hands over hundreds of tasks at once; one Redis round trip
	// each, a few in flight, keeps that short.
	errs := make([]error, len(ts))
	sem := make(chan struct{}, dispatchParallelism)
	var wg sync.WaitGroup
	for i, t := range ts {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = d.enqueue(ctx, t, insp)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// dispatchParallelism bounds the enqueues one dispatch has in flight.
const dispatchParallelism = 8

// enqueue puts one task on its queue; see dispatch.
func (d *Dispatcher) enqueue(ctx context.Context, t tasks.Task, insp *asynq.Inspector) error {
	b := encodePayload(t)
	queue := QueueSteps
	switch t.Kind {
	case tasks.KindApprovalTimeout, tasks.KindEscalation:
		queue = QueueTimers
	case tasks.KindWebhook, tasks.KindPagerDuty:
		queue = QueueWebhooks
	}
	id := t.Kind + ":" + t.ID
	if t.Variant != "" {
		id += ":" + t.Variant
	}
	opts := []asynq.Option{
		asynq.TaskID(id),
		asynq.Queue(queue),
		asynq.MaxRetry(20),
		// The run state machine enforces step timeouts; this bounds a stuck handler.
		asynq.Timeout(15 * time.Minute),
	}
	if !t.At.IsZero() && time.Until(t.At) > 0 {
		opts = append(opts, asynq.ProcessAt(t.At))
	}
	task := asynq.NewTask(t.Kind, b, opts...)
	_, err := d.client.EnqueueContext(ctx, task)
	if errors.Is(err, asynq.ErrTaskIDConflict) && insp != nil {
		if info, ierr := insp.GetTaskInfo(queue, id); ierr == nil && info.State == asynq.TaskStateArchived {
			if derr := insp.DeleteTask(queue, id); derr != nil && !errors.Is(derr, asynq.ErrTaskNotFound) {
				return fmt.Errorf("delete archived %s %s: %w", t.Kind, t.ID, derr)
			}
			_, err = d.client.EnqueueContext(ctx, task)
		}
	}
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) && !errors.Is(err, asynq.ErrDuplicateTask) {
		return fmt.Errorf("enqueue %s %s: %w", t.Kind, t.ID, err)
	}
	return nil
}
