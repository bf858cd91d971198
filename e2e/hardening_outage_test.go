package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHardeningPostgresOutage: while Postgres cannot be reached, startRun
// answers a retryable UNAVAILABLE with HTTP 503 and Retry-After (not
// INTERNAL with 200), and works again once Postgres is back.
func TestHardeningPostgresOutage(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "outage")
	px := newTCPProxy(t, pgTarget(), true, false)
	st := newStack(t, 0, "DATABASE_APP_URL="+withHost(suite.appURL, px.addr), "SLUICE_DB_MAX_CONNS=4")
	c := f.owner.on(st.server)
	const start = `mutation($w: ID!, $e: ID!) { startRun(input: {workflowID: $w, environmentID: $e, input: {name: "ada"}}) { id } }`
	vars := map[string]any{"w": f.workflowID, "e": f.envID}
	if r := c.do(start, vars); r.Status != 200 || len(r.Errors) > 0 {
		t.Fatalf("before the outage: %d %s", r.Status, r.Raw)
	}

	px.down()
	for _, q := range []string{start, `{ workflows { totalCount } }`} {
		r := c.do(q, vars)
		if r.Code() != "UNAVAILABLE" || r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Errorf("during the outage: want UNAVAILABLE with 503 and Retry-After, got %d Retry-After=%q %s", r.Status, r.Header.Get("Retry-After"), r.Raw)
		}
	}
	if strings.Contains(st.server.Logs(), `"internal error"`) {
		t.Errorf("the outage was logged as an internal error:\n%s", tail(st.server.Logs(), 3000))
	}

	px.up()
	eventually(t, 30*time.Second, func() (bool, string) {
		r := c.do(start, vars)
		return r.Status == 200 && len(r.Errors) == 0, fmt.Sprintf("after the outage: %d %s", r.Status, r.Raw)
	})
}

// launch starts a Sluice process without waiting for it to be ready.
func launch(t *testing.T, extra []string, args ...string) *process {
	t.Helper()
	p := &process{done: make(chan struct{})}
	p.cmd = exec.Command(suite.bin, args...)
	p.cmd.Env = append(baseEnv(), extra...)
	p.cmd.Stderr = lockedWriter{p}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if after, ok := strings.CutPrefix(line, "listening on "); ok {
				p.mu.Lock()
				p.url = after
				p.mu.Unlock()
			}
			_, _ = lockedWriter{p}.Write([]byte(line + "\n"))
		}
	}()
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

// waitLog waits until p's output contains s; it fails if p exits first.
func waitLog(t *testing.T, p *process, s string, timeout time.Duration) {
	t.Helper()
	exited := false
	eventually(t, timeout, func() (bool, string) {
		if strings.Contains(p.Logs(), s) {
			return true, ""
		}
		select {
		case <-p.done:
			exited = true
			return true, ""
		default:
		}
		return false, fmt.Sprintf("no %q:\n%s", s, tail(p.Logs(), 3000))
	})
	if exited && !strings.Contains(p.Logs(), s) {
		t.Fatalf("process exited while waiting for %q:\n%s", s, tail(p.Logs(), 3000))
	}
}

// TestHardeningStartWhileDown: `serve` and `worker` started while Postgres
// and Redis are down wait (logging each wait) instead of exiting, and become
// ready once both are back.
func TestHardeningStartWhileDown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "startdown")
	db, release, err := acquireRedisDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(release)
	pg := newTCPProxy(t, pgTarget(), false, false)
	rd := newTCPProxy(t, redisAddr(), false, false)
	env := []string{
		"DATABASE_APP_URL=" + withHost(suite.appURL, pg.addr),
		"REDIS_URL=" + withHost(redisURLFor(db), rd.addr),
		"SLUICE_ADDR=127.0.0.1:0",
		"SLUICE_WORKER_CONCURRENCY=4", "SLUICE_WORKER_RECONCILE_INTERVAL=1s", "SLUICE_DB_MAX_CONNS=4",
	}
	serve := launch(t, env, "serve")
	work := launch(t, env, "worker")
	for _, p := range []*process{serve, work} {
		waitLog(t, p, "waiting for the database", 30*time.Second)
	}
	pg.up()
	for _, p := range []*process{serve, work} {
		waitLog(t, p, "waiting for redis", 30*time.Second)
	}
	rd.up()
	waitLog(t, serve, "listening on ", 30*time.Second)
	waitLog(t, work, "worker started", 30*time.Second)
	serve.mu.Lock()
	base := serve.url
	serve.mu.Unlock()
	eventually(t, 30*time.Second, func() (bool, string) {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, fmt.Sprintf("/readyz %d:\n%s", resp.StatusCode, tail(serve.Logs(), 3000))
	})
	// The stack works end to end: a run started through it finishes on its
	// worker.
	c := &client{t: t, url: base + "/graphql", token: f.owner.token}
	id := str(c.ok(`mutation($w: ID!, $e: ID!) { startRun(input: {workflowID: $w, environmentID: $e, input: {name: "ada"}}) { id } }`,
		map[string]any{"w": f.workflowID, "e": f.envID}), "startRun.id")
	waitRun(t, c, id, 60*time.Second, "succeeded")
}
