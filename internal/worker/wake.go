package worker

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/tasks"
)

// The wake list lets a worker start a lone ready step at once instead of
// after its next queue poll (asynq polls; it cannot block). It only
// accelerates: the step's asynq task is enqueued as usual, and a worker that
// pops the wake-up runs the step only after deleting that task while it is
// still pending, so the step runs once either way. A lost wake-up costs
// nothing but the poll.
const (
	wakeKey = "sluice:wake:steps"
	// wakeBacklog bounds the list when no worker consumes it.
	wakeBacklog = 1000
)

// wake pushes a wake-up for a single step task that is due now.
func (d *Dispatcher) wake(ctx context.Context, t tasks.Task) {
	if d.rdb == nil {
		return
	}
	b := encodePayload(t)
	pipe := d.rdb.Pipeline()
	pipe.RPush(ctx, wakeKey, b)
	pipe.LTrim(ctx, wakeKey, -wakeBacklog, -1)
	_, _ = pipe.Exec(ctx)
}

// wakeLoop pops wake-ups and runs their steps directly, while slots last.
func (w *Worker) wakeLoop(ctx, execCtx context.Context, slots chan struct{}) {
	for ctx.Err() == nil {
		res, err := w.rdb.BLPop(ctx, time.Second, wakeKey).Result()
		if err != nil {
			if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
				time.Sleep(time.Second) // Redis unavailable: the queue still works
			}
			continue
		}
		var p payload
		if len(res) != 2 || json.Unmarshal([]byte(res[1]), &p) != nil {
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // busy: the queue will deliver it
		}
		// Run the step only if its task was still waiting in the queue:
		// deleting it is what makes this worker the one that runs it.
		if err := w.inspector.DeleteTask(QueueSteps, tasks.KindStep+":"+p.ID); err != nil {
			<-slots
			continue
		}
		go func() {
			defer func() { <-slots }()
			if err := w.runs.ExecuteChain(execCtx, p.TenantID, p.attempt()); err != nil {
				// The step is queued in Postgres; the reconciler sends it again.
				w.log.Warn("woken step attempt", "err", err, "tenant_id", p.TenantID, "attempt_id", p.ID)
			}
		}()
	}
}
