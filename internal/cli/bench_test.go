package cli

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
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
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
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
	for _, scenario := range []string{"baseline", "3-step", "chain", "fan-out", "start", "live", "memory"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(scenario) + `\s`).MatchString(out) {
			t.Errorf("no %s figure in the report:\n%s", scenario, out)
		}
	}
	if strings.Contains(out, "n/a") {
		t.Errorf("a figure could not be measured:\n%s", out)
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
