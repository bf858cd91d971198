// Package bench owns Sluice's end-to-end benchmark (`sluice bench`): a raw
// asynq baseline, then run latency and throughput, long chains, fan-out,
// startRun at a fixed rate, live-update latency, fairness across tenants
// and the retention purge under run traffic, measured against
// running API and worker processes as a client sees them (GraphQL over
// HTTP and websockets), plus the processes' peak memory, and the same
// 3-step workflow on a peer (DBOS Transact for Go) for comparison. The command sets
// the processes up (a fresh database, a tenant, a token); this package
// drives them and reports figures against Sluice's targets.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/tally"
)

// Sizes is the scale of each scenario.
type Sizes struct {
	BaselineTasks  int           // raw asynq no-op tasks
	Commits        int           // one-row insert commits of the commit baseline
	LatencyRuns    int           // sequential 3-step runs, timed one by one
	ThroughputRuns int           // 3-step runs in the throughput phase
	InFlight       int           // runs kept in flight in the throughput phase
	Chains         []int         // lengths of the sequential chains
	FanOut         int           // parallel steps of the fan-out run
	StartRate      int           // startRun calls per second
	StartFor       time.Duration // how long startRun is driven at StartRate
	Subscribers    int           // websocket subscribers on one run
	LiveSteps      int           // steps whose events the subscribers receive live, in a burst
	LiveGates      int           // approvals decided one at a time while the subscribers listen
	FairnessRuns   int           // tenant A's runs started at once (fairness)
	FairnessProbes int           // tenant B's runs timed one at a time, idle and under A's burst
	RetentionRuns  int           // finished runs (cloned by SQL) whose payloads the retention purge clears
	RetentionProbe int           // 3-step runs timed one at a time, before and during the purge
	RetentionBatch int           // runs per purge transaction (SLUICE_RETENTION_BATCH the command gives the workers)
}

// FullSizes is the benchmark the targets are stated for.
func FullSizes() Sizes {
	return Sizes{
		BaselineTasks: 20000, Commits: 1000, LatencyRuns: 100, ThroughputRuns: 1000, InFlight: 200,
		Chains: []int{40, 400}, FanOut: 1000, StartRate: 200, StartFor: 5 * time.Second,
		Subscribers: 1000, LiveSteps: 5, LiveGates: 6, FairnessRuns: 5000, FairnessProbes: 100,
		RetentionRuns: 50000, RetentionProbe: 100, RetentionBatch: 500,
	}
}

// SmokeSizes runs every scenario in a few seconds, to check that all of it
// works; its figures mean nothing.
func SmokeSizes() Sizes {
	return Sizes{
		BaselineTasks: 200, Commits: 20, LatencyRuns: 3, ThroughputRuns: 20, InFlight: 10,
		Chains: []int{5, 10}, FanOut: 20, StartRate: 50, StartFor: 200 * time.Millisecond,
		Subscribers: 5, LiveSteps: 2, LiveGates: 2, FairnessRuns: 30, FairnessProbes: 2,
		RetentionRuns: 300, RetentionProbe: 3, RetentionBatch: 50,
	}
}

// Process is a process whose peak memory is reported.
type Process struct {
	Name string
	PID  int
}

// Target is the running system under test.
type Target struct {
	APIURL      string // http://host:port of the API process the benchmark talks to
	Token       string // a bearer token of the benchmark tenant's owner
	OtherToken  string // an owner's token of a second tenant (fairness); empty: fairness fails
	RedisAddr   string // the Redis server, for the baseline
	DatabaseURL string // the benchmark's database (a role that may create a table), for the commit baseline
	BaselineDB  int    // a Redis database of the baseline's own, flushed before and after
	Workers     int    // worker processes (the baseline runs as many asynq servers)
	Concurrency int    // tasks each worker runs at once
	Processes   []Process
	// Counters reads the processes' wire counters (internal/tally), summed;
	// nil: wire cost is not reported.
	Counters func(context.Context) (map[string]tally.Counts, error)
	// PeersDir is the DBOS peer's module directory (PeerDBOSDir in
	// Sluice's checkout); empty: the peers scenario reports n/a.
	PeersDir string
	// NewDatabase creates an empty database named prefix plus a random
	// suffix on the benchmark's Postgres and returns its URL and what drops
	// it; the peers scenario gives it to the peer.
	NewDatabase func(ctx context.Context, prefix string) (url string, drop func(), err error)
}

// Scenario names, as --only takes them.
const (
	ScenarioBaseline  = "baseline"
	ScenarioThreeStep = "3-step"
	ScenarioPeers     = "peers"
	ScenarioChain     = "chain"
	ScenarioFanOut    = "fan-out"
	ScenarioStart     = "start"
	ScenarioLive      = "live"
)

// Scenarios lists every scenario in the order they run.
var Scenarios = []string{ScenarioBaseline, ScenarioThreeStep, ScenarioPeers, ScenarioChain, ScenarioFanOut, ScenarioStart, ScenarioLive, ScenarioEval, ScenarioFairness, ScenarioRetention}

// Options tunes a benchmark.
type Options struct {
	Sizes Sizes
	// Targets compares figures with Sluice's targets (meaningful only at
	// FullSizes).
	Targets bool
	// Only, if not empty, names the scenarios to run.
	Only []string
	// Progress receives a line per step of the benchmark. If nil, nothing.
	Progress io.Writer
}

// Run measures every scenario against t. It returns the figures measured
// and an error when a scenario could not run or a run did not succeed; a
// missed target is not an error.
func Run(ctx context.Context, t Target, o Options) (*Report, error) {
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	s := &session{t: t, o: o, c: newClient(t.APIURL, t.Token), report: &Report{Targets: o.Targets}}
	env, err := s.c.environment(ctx, "development")
	if err != nil {
		return s.report, err
	}
	s.envID = env
	phases := []struct {
		name string
		run  func(context.Context) error
	}{
		{ScenarioBaseline, s.baseline},
		{ScenarioThreeStep, s.threeStep},
		{ScenarioPeers, s.peers},
		{ScenarioChain, s.chains},
		{ScenarioFanOut, s.fanOut},
		{ScenarioStart, s.startRate},
		{ScenarioLive, s.live},
		{ScenarioEval, s.eval},
		{ScenarioFairness, s.fairness},
		// Last: it sets the tenant's payloadDays to 0.
		{ScenarioRetention, s.retention},
	}
	pids := make([]int, 0, len(t.Processes))
	for _, p := range t.Processes {
		pids = append(pids, p.PID)
	}
	stopAnon := anonPeaks(ctx, pids)
	var errs []error
	for _, p := range phases {
		if len(o.Only) > 0 && !slices.Contains(o.Only, p.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		s.progress("%s ...", p.name)
		begin := time.Now()
		if err := p.run(ctx); err != nil {
			s.progress("%s failed: %v", p.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
			continue
		}
		s.progress("%s done in %s", p.name, time.Since(begin).Round(time.Millisecond))
	}
	if err := s.checkRuns(ctx); err != nil {
		errs = append(errs, err)
	}
	anon := stopAnon()
	for _, p := range t.Processes {
		rss, err := PeakRSS(p.PID)
		if err != nil {
			errs = append(errs, fmt.Errorf("peak RSS of %s: %w", p.Name, err))
			continue
		}
		s.figure("memory", "peak RSS, "+p.Name, float64(rss)/(1<<20), "MiB", nil)
		if n, ok := anon[p.PID]; ok {
			// Without the binary's mapped file: comparable between builds.
			s.figure("memory", fmt.Sprintf("peak anonymous memory (RssAnon every %s), %s", anonSampleEvery, p.Name), float64(n)/(1<<20), "MiB", nil)
		}
	}
	return s.report, errors.Join(errs...)
}

// session is one benchmark in progress.
type session struct {
	t      Target
	o      Options
	c      *client
	envID  string
	report *Report

	asynqRate   float64       // baseline tasks/s, once measured
	commitP50   time.Duration // one-row commit p50, once measured
	threeStepWF string        // the 3-step workflow, once deployed

	threeStepServerP50 time.Duration // 3-step latency p50, createdAt->finishedAt, once measured
	threeStepRunsPerS  float64       // 3-step throughput, once measured

	mu   sync.Mutex
	runs []string // every run started, for the final check
}

func (s *session) progress(format string, args ...any) {
	fmt.Fprintf(s.o.Progress, "bench: "+format+"\n", args...)
}

// figure adds a measurement to the report; goal is nil when none applies
// or targets are off.
func (s *session) figure(scenario, name string, value float64, unit string, goal *Goal) {
	if !s.o.Targets {
		goal = nil
	}
	f := Figure{Scenario: scenario, Name: name, Value: value, Unit: unit, Goal: goal}
	s.report.Figures = append(s.report.Figures, f)
	s.progress("  %s %s: %s", scenario, name, f.value())
}

// deploy deploys def under a unique slug and returns the workflow id.
func (s *session) deploy(ctx context.Context, name string, def map[string]any) (string, error) {
	slug := fmt.Sprintf("bench-%s-%d", name, time.Now().UnixNano()%1e9)
	return s.c.deploy(ctx, s.envID, slug, def)
}

// start starts a run of wf and remembers it for the final check.
func (s *session) start(ctx context.Context, wf string, n int) (string, error) {
	id, err := s.c.startRun(ctx, wf, s.envID, map[string]any{"n": n})
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.runs = append(s.runs, id)
	s.mu.Unlock()
	return id, nil
}

// checkRuns reads every run the benchmark started: each must have succeeded.
func (s *session) checkRuns(ctx context.Context) error {
	if len(s.runs) == 0 {
		return nil
	}
	m, err := s.c.statuses(ctx, s.runs)
	if err != nil {
		return fmt.Errorf("read run statuses: %w", err)
	}
	var bad []string
	for _, id := range s.runs {
		r, ok := m[id]
		switch {
		case !ok:
			bad = append(bad, id+" (not found)")
		case r.Status != "succeeded":
			bad = append(bad, fmt.Sprintf("%s (%s %s)", id, r.Status, r.Error))
		}
	}
	s.report.Runs, s.report.Succeeded = len(s.runs), len(s.runs)-len(bad)
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d runs did not succeed: %s", len(bad), len(s.runs), strings.Join(bad[:min(len(bad), 5)], ", "))
	}
	return nil
}
