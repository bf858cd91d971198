package cli

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/bench"
)

// TestMain lets this test binary stand in for the sluice binary: `sluice
// bench` starts `serve` and `worker` as child processes of os.Executable(),
// which under `go test` is this binary. go test passes only -test.* flags,
// so a first argument naming one of those commands means "be sluice" (as
// cmd/sluice's main does).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "worker") {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := Run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "sluice:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func testAdminURL() string {
	if u := os.Getenv("SLUICE_TEST_ADMIN_URL"); u != "" {
		return u
	}
	return benchAdminURL
}

func testRedisAddr() string {
	if a := os.Getenv("SLUICE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// TestBenchSmoke runs every benchmark scenario at tiny sizes against the
// local Postgres and Redis (as `make test` provides them) with real child
// processes: it must complete and every run must succeed. Timings are not
// asserted; they mean nothing at these sizes.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres and Redis")
	}
	// A first build of the DBOS peer compiles DBOS (about a minute); later
	// ones take seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	begin := time.Now()
	err := Run(ctx, []string{"bench", "--smoke", "--admin-url", testAdminURL(), "--redis", testRedisAddr()}, os.Getenv, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench --smoke: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("bench --smoke took %s", time.Since(begin).Round(time.Millisecond))
	out := stdout.String()
	m := regexp.MustCompile(`runs: (\d+) started, (\d+) succeeded`).FindStringSubmatch(out)
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("want every run started to have succeeded, got:\n%s", out)
	}
	for _, scenario := range []string{"baseline", "3-step", "peers", "chain", "fan-out", "start", "live", "retention", "memory"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(scenario) + `\s`).MatchString(out) {
			t.Errorf("no %s figure in the report:\n%s", scenario, out)
		}
	}
	if !regexp.MustCompile(`(?m)^fan-out\s+map of \d+ transforms: time to finish\s+[0-9.]+ s`).MatchString(out) {
		t.Errorf("no map-of-transforms figure in the fan-out scenario:\n%s", out)
	}
	var peers []string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "peers ") {
			peers = append(peers, line)
		} else if strings.Contains(line, "n/a") {
			t.Errorf("a figure could not be measured: %s", line)
		}
	}
	checkPeers(t, peers)
	// The processes' wire counters were scraped: every path of a 3-step run
	// shows its units and at least one Postgres round trip per unit.
	for _, p := range []string{"api:startRun", "step", "continuation", "finish"} {
		re := regexp.MustCompile(`(?m)^3-step\s+\d+ sequential runs: wire per ` + regexp.QuoteMeta(p) + ` \((\d+)\)\s+[0-9.]+ tx, [0-9.]+ stmt, ([0-9.]+) PG RT`)
		m := re.FindStringSubmatch(out)
		if m == nil || m[1] == "0" || m[2] == "0.00" {
			t.Errorf("no wire cost per %s in the report:\n%s", p, out)
		}
	}
	// The benchmark cleans up after itself: its database is gone.
	name := regexp.MustCompile(`database (sluice_bench_[0-9a-f]+)`).FindStringSubmatch(stderr.String())
	if name == nil {
		t.Fatalf("stderr names no database:\n%s", stderr.String())
	}
	admin, err := sql.Open("pgx", testAdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var exists bool
	if err := admin.QueryRow("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name[1]).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s was not dropped", name[1])
	}
}

// checkPeers checks the peers scenario's lines of a smoke report. The DBOS
// peer is measured, with both ratios against 3-step (which ran), unless there
// is no go command on PATH or its module cannot be fetched (no network and
// an empty module cache): then its one line says n/a and why.
func checkPeers(t *testing.T, lines []string) {
	t.Helper()
	all := strings.Join(lines, "")
	if len(lines) == 1 && strings.Contains(all, "n/a: no Go toolchain on PATH") {
		if _, err := exec.LookPath("go"); err == nil {
			t.Errorf("go is on PATH but the peers scenario did not find it:\n%s", all)
		}
		return
	}
	if len(lines) == 1 && strings.Contains(all, "n/a: go build of the peer failed") {
		dl := exec.Command("go", "mod", "download")
		dl.Dir = filepath.Join("..", "..", filepath.FromSlash(bench.PeerDBOSDir))
		dl.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		if out, err := dl.CombinedOutput(); err == nil {
			t.Errorf("the DBOS peer's modules download but its build failed:\n%s", all)
		} else {
			t.Logf("DBOS peer not measured, its modules cannot be fetched here (%v: %s):\n%s", err, out, all)
		}
		return
	}
	for _, want := range []string{"latency start->result", "throughput", "3-step p50 server clock / DBOS p50", "3-step runs/s / DBOS runs/s"} {
		if !strings.Contains(all, want) {
			t.Errorf("no peers figure %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "n/a") {
		t.Errorf("a peers figure could not be measured:\n%s", all)
	}
}

// TestDefaultPeersDir: run from anywhere in the checkout (tests run in
// their package's directory), the peer's module is found under the root.
func TestDefaultPeersDir(t *testing.T) {
	dir := defaultPeersDir()
	if !strings.HasSuffix(filepath.ToSlash(dir), "/"+bench.PeerDBOSDir) {
		t.Fatalf("defaultPeersDir = %q", dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !declaresModule(b, sluiceModule+"/"+bench.PeerDBOSDir) {
		t.Errorf("%s/go.mod declares another module:\n%s", dir, b)
	}
	for gomod, want := range map[string]bool{
		"module github.com/sluicehq/sluice\n\ngo 1.26\n":        true,
		"// a comment\nmodule \"github.com/sluicehq/sluice\"\n": true,
		"module github.com/sluicehq/sluice/internal/x\n":        false,
		"go 1.26\n": false,
	} {
		if got := declaresModule([]byte(gomod), sluiceModule); got != want {
			t.Errorf("declaresModule(%q) = %v, want %v", gomod, got, want)
		}
	}
}

// TestBenchBadInput refuses bad flags before creating anything.
func TestBenchBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--workers", "0"},
		{"--concurrency", "-1"},
		{"--only", "3-step,warp"},
		{"extra"},
		{"--admin-url", "not a url"},
	} {
		var stdout, stderr bytes.Buffer
		err := Run(context.Background(), append([]string{"bench"}, args...), func(string) string { return "" }, &stdout, &stderr)
		if err == nil {
			t.Errorf("bench %v: want an error", args)
		}
		if strings.Contains(stderr.String(), "sluice_bench_") {
			t.Errorf("bench %v created a database before refusing: %s", args, stderr.String())
		}
	}
}

// TestBenchSLA runs `bench --only sla`: one sweep over 100,000 running runs
// records the 100 breaches due and reads runs through indexes only.
func TestBenchSLA(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Postgres and Redis")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := Run(ctx, []string{"bench", "--only", "sla", "--admin-url", testAdminURL(), "--redis", testRedisAddr()}, os.Getenv, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench --only sla: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"100 breaches recorded (100 in sla_breaches), 1 incident(s)", "sequential scan of runs (either query): false",
		"Index Scan using run_tenant_id_sla_check_at on runs"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
