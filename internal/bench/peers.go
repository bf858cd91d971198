package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// PeerDBOSDir is where the DBOS peer's module lives, relative to Sluice's
// module root.
const PeerDBOSDir = "internal/bench/peers/dbos"

// Peer build and run bounds. A first build compiles DBOS and its
// dependencies (about a minute on 2 shared cores); later ones hit the build
// cache and take seconds.
const (
	peerBuildTimeout = 4 * time.Minute
	peerRunTimeout   = 10 * time.Minute
)

// Goals against the peer, as ratios measured in the same benchmark.
const (
	goalP50VsDBOS  = 1.0 // 3-step p50 (server clock) / DBOS p50, at most
	goalRateVsDBOS = 1.0 // 3-step runs/s / DBOS runs/s, at least
)

// dbosResult is what the DBOS peer prints (internal/bench/peers/dbos).
type dbosResult struct {
	System         string  `json:"system"`
	Version        string  `json:"version"`
	LaunchMs       float64 `json:"launch_ms"`
	Sequential     int     `json:"sequential"`
	WarmUp         int     `json:"warm_up"`
	P50            float64 `json:"p50_ms"`
	P95            float64 `json:"p95_ms"`
	P99            float64 `json:"p99_ms"`
	DBP50          float64 `json:"db_p50_ms"`
	Runs           int     `json:"runs"`
	InFlight       int     `json:"in_flight"`
	RunsPerS       float64 `json:"runs_per_s"`
	ClientRunsPerS float64 `json:"client_runs_per_s"`
}

// unavailable is why a peer could not be measured; the scenario reports it
// as n/a and the benchmark goes on.
type unavailable struct{ reason string }

func (u unavailable) Error() string { return u.reason }

// peers runs the 3-step no-op workflow on DBOS Transact for Go (built from
// its own module with the Go toolchain, run with the library's defaults on
// a database of its own on the same Postgres) and compares it with the
// 3-step scenario's figures of this benchmark. A missing toolchain or
// source tree, or a build that fails (no network to fetch the module, say),
// makes the figures n/a rather than failing the benchmark; a peer that
// builds and then fails is an error.
func (s *session) peers(ctx context.Context) error {
	res, rss, err := s.runDBOS(ctx)
	var na unavailable
	if errors.As(err, &na) {
		s.figure(ScenarioPeers, "DBOS Transact for Go (n/a: "+na.reason+")", math.NaN(), "", nil)
		return nil
	}
	if err != nil {
		return err
	}
	name := "DBOS " + res.Version
	s.figure(ScenarioPeers, fmt.Sprintf("%s latency start->result (%d sequential runs) p50", name, res.Sequential), res.P50, "ms", nil)
	s.figure(ScenarioPeers, fmt.Sprintf("%s latency start->result (%d sequential runs) p99", name, res.Sequential), res.P99, "ms", nil)
	s.figure(ScenarioPeers, name+" latency created_at->completed_at (Postgres clock, whole ms) p50", res.DBP50, "ms", nil)
	s.figure(ScenarioPeers, fmt.Sprintf("%s throughput, %d runs in flight", name, res.InFlight), res.RunsPerS, "runs/s", nil)
	if rss > 0 {
		s.figure(ScenarioPeers, name+" peak RSS (peer process)", float64(rss)/(1<<20), "MiB", nil)
	}
	p50Name, rateName := "3-step p50 server clock / DBOS p50", "3-step runs/s / DBOS runs/s"
	if s.threeStepServerP50 <= 0 || s.threeStepRunsPerS <= 0 {
		s.figure(ScenarioPeers, p50Name+" (n/a: 3-step did not run in this benchmark)", math.NaN(), "x", nil)
		s.figure(ScenarioPeers, rateName+" (n/a: 3-step did not run in this benchmark)", math.NaN(), "x", nil)
		return nil
	}
	s.figure(ScenarioPeers, p50Name, ratio(ms(s.threeStepServerP50), res.P50), "x",
		&Goal{Value: goalP50VsDBOS, AtMost: true, Text: "<= " + trim(goalP50VsDBOS) + " x"})
	s.figure(ScenarioPeers, rateName, ratio(s.threeStepRunsPerS, res.RunsPerS), "x",
		&Goal{Value: goalRateVsDBOS, Text: ">= " + trim(goalRateVsDBOS) + " x"})
	return nil
}

// ratio is a/b, NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

// runDBOS builds the DBOS peer, gives it a fresh database and runs it at
// the benchmark's 3-step sizes. It returns the peer's figures and its peak
// RSS in bytes (0 when unknown).
func (s *session) runDBOS(ctx context.Context) (dbosResult, int64, error) {
	var res dbosResult
	dir := s.t.PeersDir
	if dir == "" {
		return res, 0, unavailable{"no peer sources: run from Sluice's checkout or pass --peers-dir"}
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return res, 0, unavailable{fmt.Sprintf("no peer module at %s (pass --peers-dir)", dir)}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return res, 0, unavailable{"no Go toolchain on PATH to build the peer"}
	}
	if s.t.NewDatabase == nil {
		return res, 0, unavailable{"no way to create the peer's database"}
	}
	tmp, err := os.MkdirTemp("", "sluice-bench-peer-")
	if err != nil {
		return res, 0, err
	}
	defer os.RemoveAll(tmp)

	s.progress("  building the DBOS peer in %s", dir)
	bin := filepath.Join(tmp, "dbos-peer")
	bctx, cancel := context.WithTimeout(ctx, peerBuildTimeout)
	defer cancel()
	build := exec.CommandContext(bctx, goBin, "build", "-o", bin, ".")
	build.Dir = dir
	// The peer's module alone: no workspace, its go.mod and go.sum as
	// committed.
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly -buildvcs=false")
	orphanProof(build)
	began := time.Now()
	if out, err := build.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return res, 0, ctx.Err()
		}
		s.progress("  go build of the DBOS peer failed (%v):\n%s", err, out)
		return res, 0, unavailable{"go build of the peer failed: " + lastLine(out, err)}
	}
	s.progress("  built in %s", time.Since(began).Round(time.Millisecond))

	url, drop, err := s.t.NewDatabase(ctx, "sluice_bench_dbos_")
	if err != nil {
		return res, 0, fmt.Errorf("peer database: %w", err)
	}
	defer drop()

	rctx, cancelRun := context.WithTimeout(ctx, peerRunTimeout)
	defer cancelRun()
	z := s.o.Sizes
	run := exec.CommandContext(rctx, bin,
		"--database-url", url,
		"--sequential", strconv.Itoa(z.LatencyRuns), "--warm-up", strconv.Itoa(threeStepWarmUp),
		"--runs", strconv.Itoa(z.ThroughputRuns), "--in-flight", strconv.Itoa(z.InFlight))
	// Nothing of the caller's environment but what a Go program's runtime
	// reads: DBOS reads DBOS__ variables, and its defaults are what is
	// measured.
	run.Env = peerEnv()
	orphanProof(run)
	var stdout bytes.Buffer
	var stderr tail
	run.Stdout, run.Stderr = &stdout, &stderr
	if err := run.Run(); err != nil {
		return res, 0, fmt.Errorf("DBOS peer: %w\n%s", err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, 0, fmt.Errorf("DBOS peer printed %q: %w", stdout.String(), err)
	}
	if res.Sequential != z.LatencyRuns || res.Runs != z.ThroughputRuns || res.P50 <= 0 || res.RunsPerS <= 0 {
		return res, 0, fmt.Errorf("DBOS peer: implausible result %s", stdout.String())
	}
	rss, _ := exitedPeakRSS(run.ProcessState)
	return res, rss, nil
}

// peerEnv is the environment the peer runs with.
func peerEnv() []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// lastLine is the last non-empty line of a command's output, or err.
func lastLine(out []byte, err error) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return err.Error()
}
