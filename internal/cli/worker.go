package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/dispatch"
	"github.com/sluicehq/sluice/internal/worker"
)

func runWorker(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	a, err := startApp(ctx, "worker", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	wcfg, err := workerConfig(getenv)
	if err != nil {
		return err
	}
	if a.cfg.WorkerMetricsAddr != "" {
		// Step, model and queue metrics are recorded here; expose them.
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", a.metrics.Handler())
		ln, err := net.Listen("tcp", a.cfg.WorkerMetricsAddr)
		if err != nil {
			return fmt.Errorf("listen for /metrics (SLUICE_WORKER_METRICS_ADDR): %w", err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				a.log.Error("worker metrics", "err", err)
			}
		}()
		defer srv.Close()
		// Before "worker started", so a caller that asked for port 0 and
		// waits for that line already knows the address.
		fmt.Fprintf(stdout, "metrics on http://%s\n", ln.Addr())
	}
	fmt.Fprintln(stdout, "worker started")
	return a.newWorker(wcfg).Run(ctx)
}

func (a *app) newWorker(cfg worker.Config) *worker.Worker {
	// Held steps (fair dispatch, a tenant's cap on running steps) are
	// released by the workers: when a step transaction of their tenant
	// makes room, and on a sweep (internal/dispatch).
	rel := dispatch.New(a.runs, a.log, a.cfg.DispatchSweep)
	a.runs.SetReleaser(rel)
	cfg.Loops = append(cfg.Loops, rel.Run)
	// The SLA sweep and window evaluation run in every worker; a singleton
	// lock in Postgres lets one at a time work.
	cfg.Loops = append(cfg.Loops,
		func(ctx context.Context) { a.sla.RunSweeper(ctx, a.db) },
		func(ctx context.Context) { a.sla.RunWindowEvaluator(ctx, a.db) },
		func(ctx context.Context) { a.releases.RunAnalyzer(ctx, a.db) },
		// Evaluations move on under a singleton lock too (internal/evals).
		func(ctx context.Context) { a.evals.RunDriver(ctx, a.db) },
		// Deployment approval requests expire under a singleton lock
		// (internal/protection).
		func(ctx context.Context) { a.protection.RunExpirer(ctx, a.db) },
		// Expired response cache entries go, one worker at a time.
		func(ctx context.Context) { a.runs.RunResponseCachePurger(ctx, a.db) },
		// Cooldowns back into Redis after a wipe (internal/ratelimit).
		a.restoreCooldowns,
		// Connections are refreshed ahead of expiry under one too.
		func(ctx context.Context) { a.conns.RunSweeper(ctx, a.db) },
		// Schedules: the ticker, one pass at a time (internal/schedules).
		func(ctx context.Context) { a.schedules.RunTicker(ctx, a.db) },
		// Bulk operations: the processor, one pass at a time at a bounded
		// rate (internal/bulk).
		func(ctx context.Context) { a.bulk.RunProcessor(ctx, a.db) },
		// Retention: the purge, one pass at a time (internal/retention).
		func(ctx context.Context) { a.retention.RunPurger(ctx, a.db) },
		// Exports: written one worker per export (its advisory lock), and
		// purged after their TTL one worker at a time (internal/export).
		a.exports.RunDriver,
		func(ctx context.Context) { a.exports.RunPurger(ctx, a.db) },
	)
	w := worker.New(a.redis, a.runs, a.webhooks, a.dispatcher, a.log, cfg)
	w.SetEscalation(a.escalation)
	return w
}

// workerConfig reads SLUICE_WORKER_CONCURRENCY, SLUICE_WORKER_POLL_INTERVAL
// and SLUICE_WORKER_RECONCILE_INTERVAL; see README.
func workerConfig(getenv func(string) string) (worker.Config, error) {
	var c worker.Config
	if v := getenv("SLUICE_WORKER_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("SLUICE_WORKER_CONCURRENCY must be a positive integer, got %q", v)
		}
		c.Concurrency = n
	}
	if v := getenv("SLUICE_WORKER_POLL_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("SLUICE_WORKER_POLL_INTERVAL must be a positive duration, got %q", v)
		}
		c.TaskCheckInterval = d
	}
	if v := getenv("SLUICE_WORKER_RECONCILE_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("SLUICE_WORKER_RECONCILE_INTERVAL must be a positive duration, got %q", v)
		}
		c.ReconcileInterval = d
	}
	return c, nil
}
