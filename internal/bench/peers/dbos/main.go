// Command dbos-peer runs Sluice's 3-step no-op benchmark workflow on DBOS
// Transact for Go, with the library's defaults, against a Postgres database
// of its own, and prints what it measured as one JSON object on stdout.
// `sluice bench --only peers` builds and runs it (internal/bench); it lives
// in a Go module of its own so that Sluice does not depend on DBOS.
//
// The workflow is three steps run one after the other, each returning
// {"v": n} from the previous step's output (the first from the workflow's
// input), as Sluice's 3-step benchmark workflow of transforms does; the
// workflow returns the last step's v, which is checked.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
)

const module = "github.com/dbos-inc/dbos-transact-golang"

// value is a step's output, as a transform's {"v": ...}.
type value struct {
	V int `json:"v"`
}

// threeStep chains three no-op steps: each step's output is the next one's
// input.
func threeStep(ctx dbos.Context, n int) (int, error) {
	s1, err := dbos.RunAsStep(ctx, func(context.Context) (value, error) { return value{V: n}, nil }, dbos.WithStepName("s1"))
	if err != nil {
		return 0, err
	}
	s2, err := dbos.RunAsStep(ctx, func(context.Context) (value, error) { return value{V: s1.V}, nil }, dbos.WithStepName("s2"))
	if err != nil {
		return 0, err
	}
	s3, err := dbos.RunAsStep(ctx, func(context.Context) (value, error) { return value{V: s2.V}, nil }, dbos.WithStepName("s3"))
	if err != nil {
		return 0, err
	}
	return s3.V, nil
}

// Result is what the peer prints. Latencies are in milliseconds.
type Result struct {
	System   string  `json:"system"`
	Version  string  `json:"version"`
	LaunchMs float64 `json:"launch_ms"` // NewContext + Launch: migrations of a fresh database included

	Sequential int     `json:"sequential"` // runs timed one by one, after WarmUp
	WarmUp     int     `json:"warm_up"`
	P50        float64 `json:"p50_ms"` // RunWorkflow -> GetResult returned, this process's clock
	P95        float64 `json:"p95_ms"`
	P99        float64 `json:"p99_ms"`
	DBP50      float64 `json:"db_p50_ms"` // completed_at - created_at of the same runs (whole milliseconds)

	Runs     int     `json:"runs"`       // throughput phase
	InFlight int     `json:"in_flight"`  // runs kept in flight
	RunsPerS float64 `json:"runs_per_s"` // 20th-80th percentile of completed_at (Postgres clock, ms)
	// ClientRunsPerS is the same rule over the times GetResult returned.
	ClientRunsPerS float64 `json:"client_runs_per_s"`
}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dbos-peer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dbos-peer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", "", "Postgres URL of a database of the peer's own (DBOS creates its schema there)")
	sequential := fs.Int("sequential", 100, "runs timed one after the other")
	warmUp := fs.Int("warm-up", 3, "runs before the timed sequential ones")
	runs := fs.Int("runs", 1000, "runs of the throughput phase")
	inFlight := fs.Int("in-flight", 200, "runs kept in flight in the throughput phase")
	verbose := fs.Bool("v", false, "let DBOS log at info level on stderr (default: warnings and errors)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbURL == "" {
		return errors.New("--database-url is required")
	}
	if *sequential < 1 || *runs < 1 || *inFlight < 1 || *warmUp < 0 {
		return errors.New("--sequential, --runs and --in-flight must be at least 1, --warm-up at least 0")
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	res := Result{System: "DBOS Transact for Go", Version: version(), Sequential: *sequential, WarmUp: *warmUp, Runs: *runs, InFlight: *inFlight}

	begin := time.Now()
	// Library defaults but the logger, which only keeps stdout for the result.
	dctx, err := dbos.NewContext(ctx, dbos.Config{
		AppName:     "sluice-bench-peer",
		DatabaseURL: *dbURL,
		Logger:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		return fmt.Errorf("new context: %w", err)
	}
	dbos.RegisterWorkflow(dctx, threeStep)
	if err := dbos.Launch(dctx); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	defer dbos.Shutdown(dctx, 10*time.Second) //nolint:errcheck // the figures are printed by then
	res.LaunchMs = ms(time.Since(begin))

	// Latency: one run at a time, start to result.
	var lat []time.Duration
	var ids []string
	for i := range *warmUp + *sequential {
		t0 := time.Now()
		id, err := runOne(dctx, i)
		if err != nil {
			return err
		}
		if i >= *warmUp {
			lat = append(lat, time.Since(t0))
			ids = append(ids, id)
		}
	}
	res.P50, res.P95, res.P99 = ms(percentile(lat, 0.5)), ms(percentile(lat, 0.95)), ms(percentile(lat, 0.99))
	st, err := statuses(dctx, ids)
	if err != nil {
		return err
	}
	var db []time.Duration
	for _, s := range st {
		db = append(db, s.CompletedAt.Sub(s.CreatedAt))
	}
	res.DBP50 = ms(percentile(db, 0.5))

	// Throughput: InFlight runs in flight, a run starting as soon as one
	// ends, until Runs have run.
	n := *runs
	ids = make([]string, n)
	returned := make([]time.Time, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range min(*inFlight, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id, err := runOne(dctx, i)
				if err != nil {
					once.Do(func() { firstErr = err; next.Store(int64(n)) })
					return
				}
				ids[i], returned[i] = id, time.Now()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	st, err = statuses(dctx, ids)
	if err != nil {
		return err
	}
	completed := make([]time.Time, 0, n)
	for _, s := range st {
		completed = append(completed, s.CompletedAt)
	}
	res.RunsPerS = steadyRate(completed)
	res.ClientRunsPerS = steadyRate(returned)

	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// runOne runs the workflow with input i and checks its result.
func runOne(ctx dbos.Context, i int) (string, error) {
	h, err := dbos.RunWorkflow(ctx, threeStep, i)
	if err != nil {
		return "", fmt.Errorf("run workflow: %w", err)
	}
	got, err := h.GetResult()
	if err != nil {
		return "", fmt.Errorf("workflow %s: %w", h.GetWorkflowID(), err)
	}
	if got != i {
		return "", fmt.Errorf("workflow %s returned %d, want %d", h.GetWorkflowID(), got, i)
	}
	return h.GetWorkflowID(), nil
}

// statuses reads the runs' statuses in one query and requires that every
// run succeeded.
func statuses(ctx dbos.Context, ids []string) ([]dbos.WorkflowStatus, error) {
	st, err := dbos.ListWorkflows(ctx, dbos.WithFilterWorkflowIDs(ids...), dbos.WithFilterLoadInput(false), dbos.WithFilterLoadOutput(false))
	if err != nil {
		return nil, fmt.Errorf("list workflows: %w", err)
	}
	if len(st) != len(ids) {
		return nil, fmt.Errorf("list workflows: %d statuses for %d runs", len(st), len(ids))
	}
	for _, s := range st {
		if s.Status != dbos.WorkflowStatusSuccess || s.CompletedAt.IsZero() {
			return nil, fmt.Errorf("workflow %s: status %s, completed at %v", s.ID, s.Status, s.CompletedAt)
		}
	}
	return st, nil
}

// percentile is the q-quantile by nearest rank, as internal/bench's Sample.
func percentile(s []time.Duration, q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// steadyRate is the completion rate between the 20th and the 80th
// percentile of completion times, as internal/bench's steadyRate.
func steadyRate(finished []time.Time) float64 {
	if len(finished) < 2 {
		return 0
	}
	sorted := slices.Clone(finished)
	slices.SortFunc(sorted, func(a, b time.Time) int { return a.Compare(b) })
	lo, hi := len(sorted)/5, len(sorted)*4/5
	if hi-lo < 1 || !sorted[hi-1].After(sorted[lo]) {
		lo, hi = 0, len(sorted)
	}
	span := sorted[hi-1].Sub(sorted[lo])
	if span <= 0 {
		return 0
	}
	return float64(hi-1-lo) / span.Seconds()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// version is the DBOS module version this binary was built with.
func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == module {
				return d.Version
			}
		}
	}
	return "unknown"
}
