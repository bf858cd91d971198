package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/bench"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/redisdb"
	"github.com/sluicehq/sluice/internal/tally"
)

const (
	benchAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	benchAppRole  = "sluice_app_bench"
)

// benchPassthrough are the variables of the caller's environment the
// benchmark's processes inherit (runtime tuning and a few Sluice knobs);
// nothing else leaks in, so a shell's DATABASE_URL cannot aim the
// benchmark elsewhere.
var benchPassthrough = []string{
	"PATH", "HOME", "TMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GODEBUG", "GOCOVERDIR",
	"SLUICE_LOG_LEVEL", "SLUICE_DB_MAX_CONNS", "SLUICE_WORKER_RECONCILE_INTERVAL",
	"SLUICE_STEP_COMMIT_LANES", "SLUICE_STEP_GROUP_MAX", "SLUICE_DISPATCH_SHARE",
	"SLUICE_RETENTION_INTERVAL", "SLUICE_RETENTION_BATCH", "SLUICE_RETENTION_DAY",
}

// runBench measures Sluice on this machine: it creates a fresh database
// (dropped at the end), migrates it, creates a tenant through the `tenant
// create` path, mints a token with a secret of its own, starts `serve` and
// `worker` as child processes of this binary (or, with --in-process, inside
// this process) on a Redis database of their own, runs the scenarios of
// internal/bench and prints the figures against the targets. It fails only
// when something could not run or a run did not succeed; missed targets
// are informational.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "tiny sizes, a few seconds: checks that every scenario runs and every run succeeds; the figures mean nothing")
	adminURL := fs.String("admin-url", benchAdminURL, "Postgres URL of a role that may create databases and roles")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address; the benchmark reserves two free databases (1-15) on it")
	workers := fs.Int("workers", 1, "worker processes")
	concurrency := fs.Int("concurrency", 20, "tasks each worker runs at once (SLUICE_WORKER_CONCURRENCY); the raw asynq baseline runs at the same")
	inProcess := fs.Bool("in-process", false, "run the API and the workers inside this process, as 'sluice dev' does (one RSS figure, which includes the benchmark's clients)")
	only := fs.String("only", "", "comma-separated scenarios to run: "+strings.Join(bench.Scenarios, ",")+" (default all), or "+benchSLAScenario+" (the SLA sweep over 100,000 running runs; only when named)")
	peersDir := fs.String("peers-dir", "", "directory of the DBOS peer's Go module, built with the go toolchain for the peers scenario (default: "+bench.PeerDBOSDir+" under the Sluice module root found from the working directory)")
	cpuProfile := fs.String("cpuprofile", "", "write this process's CPU profile to `file` while the scenarios run (with --in-process it covers the API and workers)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: sluice bench [flags]\n\n"+
			"Measures Sluice on this machine against its targets, on a fresh database and Redis\n"+
			"databases of its own, and prints a table (see BENCHMARKS.md). Exits non-zero only\n"+
			"when something failed to run or a run did not succeed.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench takes no arguments, got %q", fs.Args())
	}
	if *workers < 1 || *concurrency < 1 {
		return errors.New("--workers and --concurrency must be at least 1")
	}
	var scenarios []string
	slaBench := false
	if *only != "" {
		for _, s := range strings.Split(*only, ",") {
			if s = strings.TrimSpace(s); s == benchSLAScenario {
				slaBench = true // run apart: it talks to Postgres, not to the API
				continue
			}
			if !slices.Contains(bench.Scenarios, s) {
				return fmt.Errorf("--only: unknown scenario %q (want %s, %s)", s, strings.Join(bench.Scenarios, ", "), benchSLAScenario)
			}
			scenarios = append(scenarios, strings.TrimSpace(s))
		}
	}
	if *peersDir == "" {
		*peersDir = defaultPeersDir()
	}
	sizes := bench.FullSizes()
	if *smoke {
		sizes = bench.SmokeSizes()
	}

	dbName := "sluice_bench_" + randomHex(4)
	ownerURL, appURL, err := benchDatabaseURLs(*adminURL, dbName)
	if err != nil {
		return err
	}
	dropDatabase, err := createBenchDatabase(ctx, *adminURL, dbName)
	if err != nil {
		return err
	}
	defer dropDatabase()
	redisDB, releaseRedis, err := redisdb.Acquire(ctx, *redisAddr, fmt.Sprintf("bench-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer releaseRedis()
	baselineDB, releaseBaseline, err := redisdb.Acquire(ctx, *redisAddr, fmt.Sprintf("bench-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer releaseBaseline()

	env := map[string]string{
		"SLUICE_ENV":  config.EnvDevelopment,
		"SLUICE_ADDR": "127.0.0.1:0",
		// A port of its own: a benchmark must not collide with a running
		// Sluice's metrics address.
		"SLUICE_METRICS_ADDR":        "127.0.0.1:0",
		"SLUICE_WORKER_METRICS_ADDR": "127.0.0.1:0",
		// The eval scenario's model and API fakes listen in this process.
		"SLUICE_EGRESS_ALLOW_CIDRS": "127.0.0.1/32",
		"DATABASE_URL":              ownerURL,
		"DATABASE_APP_URL":          appURL,
		"REDIS_URL":                 fmt.Sprintf("redis://%s/%d", *redisAddr, redisDB),
		// A secret of this benchmark's own: its token is good nowhere else.
		"SLUICE_JWT_SECRET":         randomHex(32),
		"SLUICE_JWT_ISSUER":         "sluice-bench",
		"SLUICE_JWT_AUDIENCE":       "sluice",
		"SLUICE_WORKER_CONCURRENCY": strconv.Itoa(*concurrency),
		// The retention scenario: the purge passes every second (it finds
		// nothing due until the scenario sets payloadDays 0), in batches of
		// the size's runs.
		"SLUICE_RETENTION_INTERVAL": "1s",
		"SLUICE_RETENTION_BATCH":    strconv.Itoa(sizes.RetentionBatch),
	}
	for _, k := range benchPassthrough {
		if v := getenv(k); v != "" {
			env[k] = v
		}
	}
	benchEnv := func(k string) string { return env[k] }

	fmt.Fprintf(stderr, "bench: database %s, redis %s db %d (baseline db %d)\n", dbName, *redisAddr, redisDB, baselineDB)
	if err := benchMigrate(ctx, benchEnv); err != nil {
		return err
	}
	var out bytes.Buffer
	if err := runTenant(ctx, []string{"create", "--slug", "bench", "--name", "Benchmark"}, benchEnv, &out); err != nil {
		return fmt.Errorf("tenant create: %w", err)
	}
	cfg, err := config.Load(benchEnv)
	if err != nil {
		return err
	}
	token, err := mintToken(cfg, strings.TrimSpace(out.String()), "bench@sluice.local", []string{"owner"}, 4*time.Hour)
	if err != nil {
		return err
	}
	// A second tenant, for the fairness scenario.
	var other bytes.Buffer
	if err := runTenant(ctx, []string{"create", "--slug", "bench-other", "--name", "Benchmark (second tenant)"}, benchEnv, &other); err != nil {
		return fmt.Errorf("tenant create: %w", err)
	}
	otherToken, err := mintToken(cfg, strings.TrimSpace(other.String()), "bench@sluice.local", []string{"owner"}, 4*time.Hour)
	if err != nil {
		return err
	}
	if slaBench {
		if err := benchSLA(ctx, ownerURL, appURL, strings.TrimSpace(out.String()), stdout); err != nil {
			return err
		}
		if len(scenarios) == 0 {
			return nil
		}
	}

	target := bench.Target{
		Token: token, OtherToken: otherToken, RedisAddr: *redisAddr, BaselineDB: baselineDB, DatabaseURL: ownerURL,
		Workers: *workers, Concurrency: *concurrency,
		PeersDir: *peersDir,
		NewDatabase: func(ctx context.Context, prefix string) (string, func(), error) {
			name := prefix + randomHex(4)
			url, _, err := benchDatabaseURLs(*adminURL, name)
			if err != nil {
				return "", nil, err
			}
			drop, err := createBenchDatabase(ctx, *adminURL, name)
			if err != nil {
				return "", nil, err
			}
			fmt.Fprintf(stderr, "bench: peer database %s\n", name)
			return url, drop, nil
		},
	}
	var children []*bench.Child
	if *inProcess {
		url, stop, err := startInProcess(ctx, cfg, benchEnv, *workers)
		if err != nil {
			return err
		}
		defer stop()
		target.APIURL = url
		target.Processes = []bench.Process{{Name: "sluice in-process (API, workers, benchmark clients)", PID: os.Getpid()}}
	} else {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		var childEnv []string
		for k, v := range env {
			childEnv = append(childEnv, k+"="+v)
		}
		api, err := bench.StartChild(ctx, "API", exe, []string{"serve"}, childEnv)
		if err != nil {
			return err
		}
		defer api.Stop()
		children = append(children, api)
		target.APIURL = api.URL
		target.Processes = append(target.Processes, bench.Process{Name: "API (sluice serve)", PID: api.PID()})
		for i := range *workers {
			w, err := bench.StartChild(ctx, fmt.Sprintf("worker %d", i+1), exe, []string{"worker"}, childEnv)
			if err != nil {
				return err
			}
			defer w.Stop()
			children = append(children, w)
			target.Processes = append(target.Processes, bench.Process{Name: fmt.Sprintf("worker %d (sluice worker)", i+1), PID: w.PID()})
		}
	}

	if *inProcess {
		target.Counters = func(context.Context) (map[string]tally.Counts, error) { return tally.Snapshot(), nil }
	} else {
		var urls []string
		for _, c := range children {
			if c.MetricsURL != "" {
				urls = append(urls, c.MetricsURL)
			}
		}
		target.Counters = func(ctx context.Context) (map[string]tally.Counts, error) { return bench.ScrapeCounters(ctx, urls) }
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	begin := time.Now()
	report, runErr := bench.Run(ctx, target, bench.Options{Sizes: sizes, Targets: !*smoke, Only: scenarios, Progress: stderr})
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}

	mode := "child processes: 1 API, " + strconv.Itoa(*workers) + " worker(s)"
	if *inProcess {
		mode = "in-process: API and " + strconv.Itoa(*workers) + " worker(s) in the benchmark's process"
	}
	size := "full"
	if *smoke {
		size = "smoke (tiny sizes; figures mean nothing)"
	}
	fmt.Fprintf(stdout, "sluice bench: %s\nmachine: %s\nsetup: %s, worker concurrency %d, Postgres and Redis on this machine; took %s\n\n",
		size, bench.Machine(), mode, *concurrency, time.Since(begin).Round(time.Second))
	report.Print(stdout)
	for _, c := range children {
		if c.Exited() {
			runErr = errors.Join(runErr, fmt.Errorf("%s exited during the benchmark:\n%s", c.Name, c.Logs()))
		}
	}
	return runErr
}

// benchDatabaseURLs derives the owner and app-role URLs of database name
// from the admin URL.
func benchDatabaseURLs(adminURL, name string) (owner, app string, err error) {
	u, err := url.Parse(adminURL)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "", "", fmt.Errorf("--admin-url %q is not a postgres:// URL", adminURL)
	}
	u.Path = "/" + name
	owner = u.String()
	u.User = url.UserPassword(benchAppRole, benchAppRole)
	return owner, u.String(), nil
}

// createBenchDatabase creates database name and returns what drops it.
func createBenchDatabase(ctx context.Context, adminURL, name string) (func(), error) {
	admin, err := sql.Open("pgx", adminURL)
	if err != nil {
		return nil, err
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		admin.Close()
		return nil, fmt.Errorf("create database %s (through --admin-url): %w", name, err)
	}
	return func() {
		defer admin.Close()
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(dctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "bench: drop database %s: %v\n", name, err)
		}
	}, nil
}

// benchMigrate runs `migrate up` in-process. Two benchmarks starting at
// once may race to create the shared app role; the loser tries again.
func benchMigrate(ctx context.Context, getenv func(string) string) error {
	err := runMigrate(ctx, []string{"up"}, getenv, io.Discard)
	if err != nil {
		time.Sleep(200 * time.Millisecond)
		err = runMigrate(ctx, []string{"up"}, getenv, io.Discard)
	}
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	return nil
}

// startInProcess runs the API and workers in this process, wired as `sluice
// dev` wires them, and returns the API's URL and what stops it all.
func startInProcess(ctx context.Context, cfg *config.Config, getenv func(string) string, workers int) (string, func(), error) {
	log := newLogger(io.Discard, cfg.LogLevel)
	a, err := openApp(ctx, cfg, log)
	if err != nil {
		return "", nil, err
	}
	wcfg, err := workerConfig(getenv)
	if err != nil {
		a.Close()
		return "", nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range workers {
		w := a.newWorker(wcfg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(runCtx); err != nil {
				log.Error("worker", "err", err)
			}
		}()
	}
	lines := &listenWriter{url: make(chan string, 1)}
	served := make(chan error, 1)
	go func() { served <- serveHTTP(runCtx, a, lines) }()
	stop := func() {
		cancel()
		<-served
		wg.Wait()
		a.Close()
	}
	select {
	case u := <-lines.url:
		if err := bench.WaitHealthy(ctx, u, 15*time.Second); err != nil {
			stop()
			return "", nil, err
		}
		return u, stop, nil
	case err := <-served:
		served <- err
		stop()
		return "", nil, fmt.Errorf("serve: %w", err)
	}
}

// listenWriter takes serveHTTP's stdout and hands over the address from its
// "listening on" line.
type listenWriter struct{ url chan string }

func (l *listenWriter) Write(b []byte) (int, error) {
	for line := range strings.Lines(string(b)) {
		if u, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on "); ok {
			select {
			case l.url <- u:
			default:
			}
		}
	}
	return len(b), nil
}

// sluiceModule is Sluice's module path, as its go.mod names it.
const sluiceModule = "github.com/sluicehq/sluice"

// defaultPeersDir finds Sluice's module root from the working directory
// (the directory or a parent whose go.mod declares sluiceModule) and
// returns the DBOS peer's directory under it, or "" when the benchmark does
// not run from a checkout.
func defaultPeersDir() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && declaresModule(b, sluiceModule) {
			return filepath.Join(dir, filepath.FromSlash(bench.PeerDBOSDir))
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// declaresModule reports whether a go.mod's module directive is path.
func declaresModule(gomod []byte, path string) bool {
	for line := range strings.Lines(string(gomod)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module"); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`) == path
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
