// Package e2e tests Sluice as a client would: it runs the real commands
// (internal/cli's Run, in this process, or the built binary where a test
// needs a separate process) against a fresh Postgres database and the local
// Redis, and talks to them only over HTTP, websockets and webhooks.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/auth"
	sluicecli "github.com/sluicehq/sluice/internal/cli"
	"github.com/sluicehq/sluice/internal/redisdb"
)

const (
	jwtSecret   = "e2e-secret-for-tests-only-0123456789abcdef"
	jwtIssuer   = "sluice-e2e"
	jwtAudience = "sluice"
	appRole     = "sluice_app_e2e"
)

func adminURL() string {
	if u := os.Getenv("SLUICE_TEST_ADMIN_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// redisAddr is the Redis server the suite uses; each stack of processes gets
// a database of its own on it (see acquireRedisDB).
func redisAddr() string {
	if a := os.Getenv("SLUICE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// acquireRedisDB reserves a Redis database number (1-15) for one stack of
// Sluice processes, so concurrent test runs and stacks never share queues
// (internal/redisdb).
func acquireRedisDB() (int, func(), error) {
	return redisdb.Acquire(context.Background(), redisAddr(), strconv.Itoa(os.Getpid()))
}

func redisURLFor(db int) string { return fmt.Sprintf("redis://%s/%d", redisAddr(), db) }

// suite is shared by every test of the package: one binary (for the tests
// that need a separate process), one database, two API servers and two
// workers running in this process.
var suite struct {
	bin      string
	dbName   string
	ownerURL string
	appURL   string
	servers  []*process
	workers  []*process
	redisDB  int
	// exportDir is the export store (SLUICE_EXPORT_DIR) of every process.
	exportDir string
}

func TestMain(m *testing.M) {
	code, err := setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code(m))
}

func setup() (func(*testing.M) int, error) {
	dir, err := os.MkdirTemp("", "sluice-e2e-")
	if err != nil {
		return nil, err
	}
	suite.bin = filepath.Join(dir, "sluice")
	suite.exportDir = filepath.Join(dir, "exports")
	build := exec.Command("go", "build", "-o", suite.bin, "../cmd/sluice")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return nil, fmt.Errorf("build: %w", err)
	}
	suite.dbName = "sluice_e2e_" + randHex(4)
	admin, err := sql.Open("pgx", adminURL())
	if err != nil {
		return nil, err
	}
	if _, err := admin.Exec("CREATE DATABASE " + suite.dbName); err != nil {
		admin.Close()
		return nil, fmt.Errorf("create database: %w", err)
	}
	suite.ownerURL = withDB(adminURL(), suite.dbName, "")
	suite.appURL = withDB(adminURL(), suite.dbName, appRole+":"+appRole)
	db, release, err := acquireRedisDB()
	if err != nil {
		return nil, err
	}
	suite.redisDB = db
	if out, err := cli("migrate", "up"); err != nil {
		return nil, fmt.Errorf("migrate up: %v\n%s", err, out)
	}
	for range 2 {
		p, err := startServe(nil)
		if err != nil {
			return nil, err
		}
		suite.servers = append(suite.servers, p)
	}
	for range 2 {
		p, err := startWorker(nil)
		if err != nil {
			return nil, err
		}
		suite.workers = append(suite.workers, p)
	}
	return func(m *testing.M) int {
		// Closed only here: the database is dropped through it at the end.
		defer admin.Close()
		code := m.Run()
		for _, p := range append(suite.servers, suite.workers...) {
			p.stop()
		}
		release()
		if l := leaks(); l != "" {
			fmt.Fprintln(os.Stderr, l)
			code = 1
		}
		if code != 0 {
			for i, p := range suite.workers {
				fmt.Fprintf(os.Stderr, "--- worker %d log (tail)\n%s\n", i, tail(p.Logs(), 4000))
			}
		}
		if code == 0 {
			if _, err := admin.Exec("DROP DATABASE IF EXISTS " + suite.dbName + " WITH (FORCE)"); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: drop database:", err)
			}
			dropIsolatedTemplate(admin)
			os.RemoveAll(dir)
		}
		return code
	}, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withDB rewrites a postgres URL to another database and, when userinfo is
// set ("user:password"), another user.
func withDB(u, db, userinfo string) string {
	rest := strings.TrimPrefix(u, "postgres://")
	at := strings.Index(rest, "@")
	hostAndPath := rest[at+1:]
	host := hostAndPath[:strings.Index(hostAndPath, "/")]
	query := ""
	if q := strings.Index(hostAndPath, "?"); q >= 0 {
		query = hostAndPath[q:]
	}
	user := rest[:at]
	if userinfo != "" {
		user = userinfo
	}
	return "postgres://" + user + "@" + host + "/" + db + query
}

// baseEnv is the environment every Sluice process of the suite gets.
func baseEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"SLUICE_ENV=development",
		"DATABASE_URL=" + suite.ownerURL,
		"DATABASE_APP_URL=" + suite.appURL,
		"REDIS_URL=" + redisURLFor(suite.redisDB),
		"SLUICE_JWT_SECRET=" + jwtSecret,
		"SLUICE_JWT_ISSUER=" + jwtIssuer,
		"SLUICE_JWT_AUDIENCE=" + jwtAudience,
		"SLUICE_EGRESS_ALLOW_CIDRS=127.0.0.0/8",
		"SLUICE_LOG_LEVEL=debug",
		// Open evaluations move on five times a second (default 1s).
		"SLUICE_EVAL_INTERVAL=200ms",
		// Webhooks: the retry schedule (and the 5-day disable-after period)
		// runs at 1/1000 speed, so 5s becomes 5ms, 5m 300ms, 30m 1.8s and
		// a whole schedule about 4.5 minutes; the old secret keeps signing
		// for 3s after a rotation instead of 24h.
		"SLUICE_WEBHOOK_SCHEDULE_SCALE=0.001",
		"SLUICE_WEBHOOK_ROTATION_GRACE=3s",
		// Exports: one store for every process (local disk), looked for
		// five times a second (default 2s).
		"SLUICE_EXPORT_DIR=" + suite.exportDir,
		"SLUICE_EXPORT_INTERVAL=200ms",
		// Every API process of the suite serves /metrics on a port of its
		// own (process.metricsURL).
		"SLUICE_METRICS_ADDR=127.0.0.1:0",
	}
}

// cli runs a sluice command to completion in this process and returns its
// stdout (stdout and stderr when it fails). Tests of the binary's own output
// and exit codes run it instead (cli_test.go).
func cli(args ...string) (string, error) {
	return cliWith(nil, args...)
}

// cliWith is cli with extra environment entries, which win over baseEnv
// (an isolated stack's database, say).
func cliWith(extra []string, args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := sluicecli.Run(context.Background(), args, envOf(append(baseEnv(), extra...)), &out, &errb)
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

// envOf turns "NAME=value" entries into a getenv; a later entry wins, as in
// a process's environment built by exec.Cmd.
func envOf(env []string) func(string) string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return func(k string) string { return m[k] }
}

// process is a running Sluice API server or worker with its output
// captured: a goroutine of this process running cli.Run, or (cmd set) a
// separate process of the binary, for tests that kill it or inspect it
// through /proc.
type process struct {
	cmd *exec.Cmd
	// cancel ends an in-process Run; err is what it returned (read after
	// done is closed).
	cancel context.CancelFunc
	err    error
	url    string
	// metricsURL is where an API process serves /metrics (its "metrics on"
	// line, printed before "listening on").
	metricsURL string
	mu         sync.Mutex
	logs       bytes.Buffer
	done       chan struct{}
}

func (p *process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

type lockedWriter struct{ p *process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.logs.Write(b)
}

// serveEnv and workerEnv are what an API server and a worker of the suite
// get on top of baseEnv.
var (
	serveEnv  = []string{"SLUICE_ADDR=127.0.0.1:0"}
	workerEnv = []string{"SLUICE_WORKER_CONCURRENCY=10", "SLUICE_WORKER_RECONCILE_INTERVAL=1s"}
)

// startServe runs `sluice serve` in this process on a free port and waits
// for /healthz.
func startServe(extra []string) (*process, error) {
	return startInProcess(append(slices.Clone(serveEnv), extra...), "serve")
}

// startWorker runs `sluice worker` in this process and waits until it
// reports it started.
func startWorker(extra []string) (*process, error) {
	return startInProcess(append(slices.Clone(workerEnv), extra...), "worker")
}

// startServeProcess and startWorkerProcess start the same as separate
// processes of the binary.
func startServeProcess(extra []string) (*process, error) {
	return startProcess(append(slices.Clone(serveEnv), extra...), "serve")
}

func startWorkerProcess(extra []string) (*process, error) {
	return startProcess(append(slices.Clone(workerEnv), extra...), "worker")
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// startInProcess runs internal/cli's Run(args) in a goroutine with a context of its
// own and waits as startProcess does: for the "listening on" line and
// /healthz, or for "worker started".
func startInProcess(extra []string, args ...string) (*process, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &process{done: make(chan struct{}), cancel: cancel}
	urlc := make(chan string, 1)
	out := &stdoutLines{p: p, urlc: urlc}
	go func() {
		defer close(p.done)
		p.err = sluicecli.Run(ctx, args, envOf(append(baseEnv(), extra...)), out, lockedWriter{p})
		if p.err != nil {
			// As main reports it.
			_, _ = lockedWriter{p}.Write([]byte("sluice: " + p.err.Error() + "\n"))
		}
	}()
	return p, p.ready(args, urlc)
}

// stdoutLines takes a server's or worker's stdout: it records each line in
// the logs and hands over the address of the "listening on" line (or ""
// for "worker started"), remembering the "metrics on" one.
type stdoutLines struct {
	p    *process
	urlc chan string
	mu   sync.Mutex
	part []byte // an unfinished line
}

func (w *stdoutLines) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.part = append(w.part, b...)
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			return len(b), nil
		}
		line := string(w.part[:i])
		w.part = w.part[i+1:]
		w.line(line)
	}
}

func (w *stdoutLines) line(line string) {
	if after, ok := strings.CutPrefix(line, "metrics on "); ok {
		w.p.metricsURL = after // read only after urlc hands over the url
	}
	if after, ok := strings.CutPrefix(line, "listening on "); ok {
		select {
		case w.urlc <- after:
		default:
		}
	}
	if line == "worker started" {
		select {
		case w.urlc <- "":
		default:
		}
	}
	_, _ = lockedWriter{w.p}.Write([]byte(line + "\n"))
}

func startProcess(extra []string, args ...string) (*process, error) {
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(suite.bin, args...)
	p.cmd.Env = append(baseEnv(), extra...)
	p.cmd.Stderr = lockedWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	urlc := make(chan string, 1)
	go func() {
		out := &stdoutLines{p: p, urlc: urlc}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			out.line(sc.Text())
		}
	}()
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, p.ready(args, urlc)
}

// ready waits until p has started: a server's url arrives on urlc and its
// /healthz answers 200, or a worker reports it started ("" on urlc). On
// failure p is stopped.
func (p *process) ready(args []string, urlc chan string) error {
	select {
	case p.url = <-urlc:
	case <-p.done:
		return fmt.Errorf("sluice %v exited early:\n%s", args, p.Logs())
	case <-time.After(30 * time.Second):
		p.stop()
		return fmt.Errorf("sluice %v did not start:\n%s", args, p.Logs())
	}
	if p.url == "" {
		return nil // a worker: no HTTP
	}
	err := poll(15*time.Second, pollEvery, func() (bool, string) {
		resp, err := http.Get(p.url + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	if err != nil {
		p.stop()
		return fmt.Errorf("sluice %v: /healthz never answered: %v", args, err)
	}
	return nil
}

// stopTimeout bounds a graceful stop: past Sluice's own shutdown bounds
// (20s for the API, 10s for asynq's handlers plus 10s for woken steps).
const stopTimeout = 45 * time.Second

// stop ends p gracefully: an in-process Run has its context cancelled and
// must return within stopTimeout (a Run that does not is a leak, which
// fails the suite); a separate process gets SIGINT, then SIGKILL.
func (p *process) stop() {
	if err := p.halt(); err != nil {
		leaked.Lock()
		leaked.errs = append(leaked.errs, err.Error())
		leaked.Unlock()
	}
}

// halt is stop, returning the leak instead of recording it.
func (p *process) halt() error {
	if p.cmd == nil {
		p.cancel()
		select {
		case <-p.done:
			return nil
		case <-time.After(stopTimeout):
			return fmt.Errorf("an in-process sluice did not return within %s of its context ending (leaked):\n%s", stopTimeout, tail(p.Logs(), 3000))
		}
	}
	if p.cmd.Process == nil {
		return nil
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return nil
}

// leaked collects in-process Runs that outlived their stop.
var leaked struct {
	sync.Mutex
	errs []string
}

func leaks() string {
	leaked.Lock()
	defer leaked.Unlock()
	return strings.Join(leaked.errs, "\n")
}

// pid is the process id of a separate process; tests that inspect a process
// through /proc or signal it need one (newProcessStack).
func (p *process) pid(t *testing.T) int {
	t.Helper()
	if p.cmd == nil || p.cmd.Process == nil {
		t.Fatal("this test needs a separate process: start it with newProcessStack or start*Process")
	}
	return p.cmd.Process.Pid
}

// server returns one of the API processes; tests alternate between them so
// every behaviour is seen through both.
func server(i int) *process { return suite.servers[i%len(suite.servers)] }

// allLogs concatenates the logs of every API process.
func allLogs() string {
	var b strings.Builder
	for _, p := range suite.servers {
		b.WriteString(p.Logs())
	}
	return b.String()
}

// tenant creates a tenant with a unique slug and returns its id.
func newTenant(t *testing.T, prefix string) string {
	t.Helper()
	return newTenantWith(t, nil, prefix)
}

// newTenantWith is newTenant with extra environment entries for the
// command (an isolated stack's database).
func newTenantWith(t *testing.T, extra []string, prefix string) string {
	t.Helper()
	slug := prefix + "-" + randHex(3)
	out, err := cliWith(extra, "tenant", "create", "--slug", slug, "--name", "Tenant "+slug)
	if err != nil {
		t.Fatalf("tenant create: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// token mints a JWT as the identity provider would.
func token(t *testing.T, tenantID string, roles ...string) string {
	t.Helper()
	tok, err := auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience,
		auth.Claims{Subject: "user-" + strings.Join(roles, "-") + "@e2e.test", TenantID: tenantID, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// gqlError is one GraphQL error.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// result is a decoded GraphQL response.
type result struct {
	Status int
	Header http.Header
	Data   map[string]any
	Errors []gqlError
	Raw    string
}

// Code returns the code of the first error, or "".
func (r *result) Code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// client talks GraphQL to one server as one caller. do, ok, fail and raw
// fail the test on the caller's goroutine; try and tryOK report errors
// instead, for goroutines and benchmarks.
type client struct {
	t     testing.TB
	url   string
	token string
	// authorization, when set, is sent as the Authorization header as is
	// instead of "Bearer "+token, for tests of the header itself.
	authorization string
}

// gqlHTTP carries every client's requests: it keeps enough idle connections
// for the benchmarks' concurrent callers, and bounds a request on a busy
// machine.
var gqlHTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func newClient(t testing.TB, i int, tok string) *client {
	return clientOf(t, server(i), tok)
}

// clientOf returns a client of the API process api with token tok.
func clientOf(t testing.TB, api *process, tok string) *client {
	return &client{t: t, url: api.url + "/graphql", token: tok}
}

// on returns a copy of c talking to another API process.
func (c *client) on(p *process) *client {
	cp := *c
	cp.url = p.url + "/graphql"
	return &cp
}

// stack is a separate API server and workers on a Redis database of their
// own (same Postgres database), for tests that kill workers, wipe Redis or
// need another configuration without disturbing the rest of the suite. An
// isolated stack (newIsolatedStack) also has a Postgres database of its own.
type stack struct {
	redisDB   int
	env       []string
	processes bool // separate processes of the binary, not in-process
	server    *process
	workers   []*process
	// ownerURL is the isolated stack's database (owner role); "" for a
	// stack on the suite's database.
	ownerURL string
}

// newStack runs a server and workers in this process on a fresh Redis
// database; extra environment variables ("NAME=value", later ones win over
// baseEnv) let a test run them with another configuration.
func newStack(t *testing.T, workers int, extra ...string) *stack {
	t.Helper()
	return startStack(t, false, workers, extra)
}

// newProcessStack is newStack with separate processes of the binary, for
// tests that SIGKILL them or read their /proc entries.
func newProcessStack(t *testing.T, workers int, extra ...string) *stack {
	t.Helper()
	return startStack(t, true, workers, extra)
}

// newIsolatedStack is newStack on a Postgres database of its own (a copy
// of the migrated schema, dropped at the end of the test): no other
// process of the suite reads or writes its rows, so the suite's workers
// (their sweeps, reconcilers and timers reach every tenant of their
// database) never take over its runs. Tests that kill workers, wipe Redis
// or count what the stack's workers did use it and still run in parallel
// with the rest of the suite. Its tenants are made with st.fixture.
func newIsolatedStack(t *testing.T, workers int, extra ...string) *stack {
	t.Helper()
	return startIsolatedStack(t, false, workers, extra)
}

// newIsolatedProcessStack is newIsolatedStack with separate processes of
// the binary (newProcessStack).
func newIsolatedProcessStack(t *testing.T, workers int, extra ...string) *stack {
	t.Helper()
	return startIsolatedStack(t, true, workers, extra)
}

func startIsolatedStack(t *testing.T, processes bool, workers int, extra []string) *stack {
	t.Helper()
	// Its drop is registered first, so it runs after the processes stop.
	ownerURL, appURL := isolatedDB(t)
	st := startStack(t, processes, workers, append([]string{"DATABASE_URL=" + ownerURL, "DATABASE_APP_URL=" + appURL}, extra...))
	st.ownerURL = ownerURL
	return st
}

// isolatedTemplate is the migrated database isolated stacks' databases
// are copied from, made once (migrating takes seconds, a copy a fraction).
var isolatedTemplate struct {
	once sync.Once
	name string
	err  error
}

// isolatedDB creates a database for one test from isolatedTemplate and
// drops it when the test ends; it returns the owner's and the app role's
// URLs.
func isolatedDB(t *testing.T) (ownerURL, appURL string) {
	t.Helper()
	admin, err := sql.Open("pgx", adminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	isolatedTemplate.once.Do(func() {
		name := suite.dbName + "_tpl"
		if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
			isolatedTemplate.err = fmt.Errorf("create template database: %w", err)
			return
		}
		out, err := cliWith([]string{"DATABASE_URL=" + withDB(adminURL(), name, "")}, "migrate", "up")
		if err != nil {
			isolatedTemplate.err = fmt.Errorf("migrate the template database: %v\n%s", err, out)
			return
		}
		isolatedTemplate.name = name
	})
	if isolatedTemplate.err != nil {
		t.Fatal(isolatedTemplate.err)
	}
	name := suite.dbName + "_" + randHex(4)
	// A copy needs the template free of sessions; the migration's pool
	// may take a moment to let its connections go.
	err = poll(15*time.Second, pollEvery, func() (bool, string) {
		if _, err := admin.Exec("CREATE DATABASE " + name + " TEMPLATE " + isolatedTemplate.name); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if err != nil {
		t.Fatalf("create an isolated database: %v", err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", adminURL())
		if err != nil {
			t.Error(err)
			return
		}
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop the isolated database %s: %v", name, err)
		}
	})
	return withDB(adminURL(), name, ""), withDB(adminURL(), name, appRole+":"+appRole)
}

// dropIsolatedTemplate drops the template of isolated databases, if one
// was made.
func dropIsolatedTemplate(admin *sql.DB) {
	if isolatedTemplate.name == "" {
		return
	}
	if _, err := admin.Exec("DROP DATABASE IF EXISTS " + isolatedTemplate.name + " WITH (FORCE)"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: drop the isolated template database:", err)
	}
}

// dbEnv is the environment entries that point a command at the stack's
// database (none for a stack on the suite's).
func (st *stack) dbEnv() []string {
	if st.ownerURL == "" {
		return nil
	}
	return []string{"DATABASE_URL=" + st.ownerURL}
}

// client returns a client of the stack's API server with token tok.
func (st *stack) client(t testing.TB, tok string) *client {
	return clientOf(t, st.server, tok)
}

// fixture is newFixture for the stack: the tenant is made in the stack's
// database and the fixture's clients talk to the stack's API server.
func (st *stack) fixture(t *testing.T, prefix string) *fixture {
	t.Helper()
	return buildFixture(t, newTenantWith(t, st.dbEnv(), prefix), st.server)
}

// ownerDB opens the stack's database as its owner (row-level security
// does not apply), closed when the test ends.
func (st *stack) ownerDB(t *testing.T) *sql.DB {
	t.Helper()
	if st.ownerURL == "" {
		return ownerDB(t)
	}
	return openDB(t, st.ownerURL)
}

func startStack(t *testing.T, processes bool, workers int, extra []string) *stack {
	t.Helper()
	db, release, err := acquireRedisDB()
	if err != nil {
		t.Fatal(err)
	}
	st := &stack{redisDB: db, env: append([]string{"REDIS_URL=" + redisURLFor(db)}, extra...), processes: processes}
	t.Cleanup(func() {
		for _, p := range append([]*process{st.server}, st.workers...) {
			if p != nil {
				if err := p.halt(); err != nil {
					t.Error(err)
				}
			}
		}
		release()
	})
	if processes {
		st.server, err = startServeProcess(st.env)
	} else {
		st.server, err = startServe(st.env)
	}
	if err != nil {
		t.Fatal(err)
	}
	for range workers {
		w, err := st.startWorker()
		if err != nil {
			t.Fatal(err)
		}
		st.workers = append(st.workers, w)
	}
	return st
}

// startWorker starts one more worker of the stack, of the stack's kind; the
// caller adds it to st.workers (or replaces a dead one) to have it stopped.
func (st *stack) startWorker() (*process, error) {
	if st.processes {
		return startWorkerProcess(st.env)
	}
	return startWorker(st.env)
}

// redis returns a client on the stack's Redis database.
func (st *stack) redis() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: redisAddr(), DB: st.redisDB})
}

// do posts a query and decodes the response; transport failures fail the test.
func (c *client) do(query string, vars map[string]any) *result {
	c.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return c.raw(body, "application/json")
}

// raw posts body as is; transport failures fail the test.
func (c *client) raw(body []byte, contentType string) *result {
	c.t.Helper()
	r, err := c.post(body, contentType)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// try posts a query like do but reports transport and decoding failures
// instead of failing the test: it is safe from any goroutine (t.Fatal must
// stay on the test's own).
func (c *client) try(query string, vars map[string]any) (*result, error) {
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return c.post(body, "application/json")
}

// post sends body to the GraphQL endpoint and decodes the answer.
func (c *client) post(body []byte, contentType string) (*result, error) {
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, c.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	switch {
	case c.authorization != "":
		req.Header.Set("Authorization", c.authorization)
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := gqlHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("POST /graphql: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := &result{Status: resp.StatusCode, Header: resp.Header, Raw: string(b)}
	var decoded struct {
		Data   map[string]any `json:"data"`
		Errors []gqlError     `json:"errors"`
	}
	if err := json.Unmarshal(b, &decoded); err != nil {
		return nil, fmt.Errorf("response is not JSON (status %d): %s", resp.StatusCode, b)
	}
	r.Data, r.Errors = decoded.Data, decoded.Errors
	return r, nil
}

// ok runs a query that must succeed and returns its data.
func (c *client) ok(query string, vars map[string]any) map[string]any {
	c.t.Helper()
	r := c.do(query, vars)
	if len(r.Errors) > 0 {
		c.t.Fatalf("unexpected errors: %s", r.Raw)
	}
	return r.Data
}

// tryOK runs a query like ok but reports transport failures and GraphQL
// errors instead of failing the test.
func (c *client) tryOK(query string, vars map[string]any) (map[string]any, error) {
	r, err := c.try(query, vars)
	if err != nil {
		return nil, err
	}
	if len(r.Errors) > 0 {
		return nil, fmt.Errorf("graphql errors: %.500s", r.Raw)
	}
	return r.Data, nil
}

// fail runs a query that must fail with code and returns the result.
func (c *client) fail(code, query string, vars map[string]any) *result {
	c.t.Helper()
	r := c.do(query, vars)
	if r.Code() != code {
		c.t.Fatalf("want error %s, got: %s", code, r.Raw)
	}
	return r
}

// get walks data along a dotted path ("createWorkflow.id").
func get(data any, path string) any {
	cur := data
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func str(data any, path string) string {
	s, _ := get(data, path).(string)
	return s
}

// edges returns the nodes of a connection at path.
func edges(data any, path string) []map[string]any {
	var out []map[string]any
	list, _ := get(data, path+".edges").([]any)
	for _, e := range list {
		if n, ok := get(e, "node").(map[string]any); ok {
			out = append(out, n)
		}
	}
	return out
}

// ownerDB opens the suite's database as its owner, for meta-tests that
// inspect the catalog.
func ownerDB(t *testing.T) *sql.DB {
	t.Helper()
	return openDB(t, suite.ownerURL)
}

func appDB(t *testing.T) *sql.DB {
	t.Helper()
	return openDB(t, suite.appURL)
}

// openDB opens the database at url, closed when the test ends.
func openDB(t *testing.T, url string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
