package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Config tunes the worker.
type Config struct {
	// Concurrency is how many tasks run at once. If zero, 20.
	Concurrency int
	// TaskCheckInterval is how long an idle processor waits before polling
	// Redis again. If zero, 20ms (asynq's 1s default adds ~0.8s per step).
	TaskCheckInterval time.Duration
	// DelayedTaskCheckInterval is how often scheduled tasks are moved to
	// their queue. If zero, 250ms.
	DelayedTaskCheckInterval time.Duration
	// ReconcileInterval is how often Postgres is checked for due work the
	// queue lost. If zero, 2s.
	ReconcileInterval time.Duration
	// Reconcile tunes what counts as lost.
	Reconcile runs.ReconcileOptions
	// Loops run beside the reconciler until the worker's ctx ends, and
	// are waited for before asynq shuts down: the SLA sweep and window
	// evaluator (internal/sla), which take their own singleton locks.
	Loops []func(ctx context.Context)
}

// Worker runs asynq handlers and the reconciler.
type Worker struct {
	cfg        Config
	runs       *runs.Service
	webhooks   *webhook.Service
	escalation *escalation.Service // optional; see SetEscalation
	dispatcher *Dispatcher
	inspector  *asynq.Inspector // lets the reconciler replace archived tasks
	server     *asynq.Server
	rdb        redis.UniversalClient
	log        *slog.Logger
}

// New builds a worker on a Redis client: its handlers call the run state
// machine (r) and the webhook deliverer (wh).
func New(rdb redis.UniversalClient, r *runs.Service, wh *webhook.Service, d *Dispatcher, log *slog.Logger, cfg Config) *Worker {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 20
	}
	if cfg.TaskCheckInterval == 0 {
		cfg.TaskCheckInterval = 20 * time.Millisecond
	}
	if cfg.DelayedTaskCheckInterval == 0 {
		cfg.DelayedTaskCheckInterval = 250 * time.Millisecond
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = 2 * time.Second
	}
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   queueWeights,
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval,
		ShutdownTimeout:          10 * time.Second,
		RetryDelayFunc: func(n int, _ error, _ *asynq.Task) time.Duration {
			// Handler errors are infrastructure errors (database down):
			// retry soon, then back off to 30s.
			return min(time.Duration(n+1)*time.Second, 30*time.Second)
		},
		Logger:   asynqLogger{log},
		LogLevel: asynq.WarnLevel,
	})
	return &Worker{cfg: cfg, runs: r, webhooks: wh, dispatcher: d, inspector: asynq.NewInspectorFromRedisClient(rdb), server: srv, rdb: rdb, log: log}
}

// SetEscalation lets the worker fire escalation levels and send PagerDuty
// events, and reconcile them.
func (w *Worker) SetEscalation(es *escalation.Service) { w.escalation = es }

// Run processes tasks and reconciles until ctx ends, then shuts down: the
// reconciler stops first, then asynq finishes in-flight handlers (up to its
// ShutdownTimeout) and requeues the rest.
func (w *Worker) Run(ctx context.Context) error {
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.KindStep, w.handleStep)
	mux.HandleFunc(tasks.KindApprovalTimeout, w.handleApprovalTimeout)
	mux.HandleFunc(tasks.KindWebhook, w.handleWebhook)
	mux.HandleFunc(tasks.KindMapItem, w.handleMapItem)
	mux.HandleFunc(tasks.KindEscalation, w.handleEscalation)
	mux.HandleFunc(tasks.KindPagerDuty, w.handlePagerDuty)
	if err := w.server.Start(mux); err != nil {
		return fmt.Errorf("start asynq server: %w", err)
	}
	// Direct runs of woken steps share a small budget beside asynq's. They
	// outlive ctx by the same grace asynq gives its handlers.
	execCtx, cancelExec := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelExec()
	slots := make(chan struct{}, max(1, w.cfg.Concurrency/4))
	wakeDone := make(chan struct{})
	go func() { defer close(wakeDone); w.wakeLoop(ctx, execCtx, slots) }()
	loopsDone := make(chan struct{})
	go func() {
		defer close(loopsDone)
		var wg sync.WaitGroup
		for _, loop := range w.cfg.Loops {
			wg.Go(func() { loop(ctx) })
		}
		wg.Wait()
	}()
	w.reconcileLoop(ctx)
	<-loopsDone
	<-wakeDone
	grace := time.AfterFunc(10*time.Second, cancelExec)
	for range cap(slots) { // wait for woken steps to finish
		slots <- struct{}{}
	}
	grace.Stop()
	w.server.Shutdown()
	return nil
}

func decode(t *asynq.Task) (payload, error) {
	var p payload
	if err := json.Unmarshal(t.Payload(), &p); err != nil {
		return p, fmt.Errorf("%w: %v", asynq.SkipRetry, err)
	}
	return p, nil
}

func (w *Worker) handleStep(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	if err := w.runs.ExecuteChain(ctx, p.TenantID, p.attempt()); err != nil {
		w.log.WarnContext(ctx, "step attempt", "err", err, "tenant_id", p.TenantID, "run_id", p.RunID, "attempt_id", p.ID)
		return err
	}
	return nil
}

func (w *Worker) handleMapItem(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	if err := w.runs.ExecuteMapItem(ctx, p.TenantID, p.RunID, p.ID); err != nil {
		w.log.WarnContext(ctx, "map item", "err", err, "tenant_id", p.TenantID, "run_id", p.RunID, "item_id", p.ID)
		return err
	}
	return nil
}

func (w *Worker) handleApprovalTimeout(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	return w.runs.ExpireApproval(ctx, p.TenantID, p.ID)
}

func (w *Worker) handleWebhook(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	return w.webhooks.DeliverWebhook(ctx, p.TenantID, p.ID)
}

func (w *Worker) handleEscalation(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	if w.escalation == nil {
		return fmt.Errorf("%w: no escalation service", asynq.SkipRetry)
	}
	id, _ := asynq.GetTaskID(ctx)
	level, loop := escalation.TaskLevel(id)
	return w.escalation.FireDue(ctx, p.TenantID, p.ID, level, loop)
}

func (w *Worker) handlePagerDuty(ctx context.Context, t *asynq.Task) error {
	p, err := decode(t)
	if err != nil {
		return err
	}
	if w.escalation == nil {
		return fmt.Errorf("%w: no escalation service", asynq.SkipRetry)
	}
	return w.escalation.Send(ctx, p.TenantID, p.ID)
}

// reconcileLoop re-sends due work Postgres knows of, every interval.
func (w *Worker) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := w.ReconcileOnce(ctx); err != nil {
				w.log.WarnContext(ctx, "reconcile", "err", err)
			} else if n > 0 {
				w.log.DebugContext(ctx, "reconciled", "tasks", n)
			}
		}
	}
}

// ReconcileOnce visits every tenant once and re-sends its due tasks.
func (w *Worker) ReconcileOnce(ctx context.Context) (int, error) {
	tenants, err := w.runs.TenantIDs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, tid := range tenants {
		due, err := w.runs.DueTasks(ctx, tid, w.cfg.Reconcile)
		if err != nil {
			return n, err
		}
		if w.webhooks != nil {
			deliveries, err := w.webhooks.DueTasks(ctx, tid, w.cfg.Reconcile.GraceOrDefault())
			if err != nil {
				return n, err
			}
			due = append(due, deliveries...)
		}
		if w.escalation != nil {
			levels, err := w.escalation.DueTasks(ctx, tid, w.cfg.Reconcile.GraceOrDefault())
			if err != nil {
				return n, err
			}
			due = append(due, levels...)
		}
		if len(due) == 0 {
			continue
		}
		if err := w.dispatcher.dispatch(ctx, due, w.inspector); err != nil {
			return n, err
		}
		n += len(due)
	}
	return n, nil
}

// asynqLogger routes asynq's logs to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
