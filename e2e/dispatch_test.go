package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// queueServer is a downstream API for the flow-control tests: it records
// the order in which requests arrive, their Idempotency-Keys, how many are
// in flight at once (and the most ever), and answers each after delay or
// once the gate opens.
type queueServer struct {
	*httptest.Server
	delay time.Duration

	mu          sync.Mutex
	order       []string            // request paths in arrival order
	keys        map[string]struct{} // distinct Idempotency-Keys
	inFlight    int
	maxInFlight int
	gate        chan struct{} // nil: open
	gatePrefix  string        // the gate holds only paths with this prefix ("": all)
}

func newQueueServer(t *testing.T, delay time.Duration) *queueServer {
	q := &queueServer{delay: delay, keys: map[string]struct{}{}}
	q.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q.mu.Lock()
		q.order = append(q.order, r.URL.Path)
		q.keys[r.Header.Get("Idempotency-Key")] = struct{}{}
		q.inFlight++
		q.maxInFlight = max(q.maxInFlight, q.inFlight)
		gate := q.gate
		if !strings.HasPrefix(r.URL.Path, q.gatePrefix) {
			gate = nil
		}
		q.mu.Unlock()
		defer func() {
			q.mu.Lock()
			q.inFlight--
			q.mu.Unlock()
		}()
		if gate != nil {
			select {
			case <-gate:
			case <-r.Context().Done():
				return
			}
		}
		if q.delay > 0 {
			select {
			case <-time.After(q.delay): // the downstream API's own work
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(q.Close)
	return q
}

func (q *queueServer) snapshot() (order []string, keys, inFlight, maxInFlight int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]string(nil), q.order...), len(q.keys), q.inFlight, q.maxInFlight
}

// applyTenant creates a tenant from a manifest with extra YAML and returns
// its id and an owner client on the stack's server.
func applyTenant(t *testing.T, st *stack, prefix, extraYAML string) (string, *client) {
	t.Helper()
	slug := prefix + "-" + randHex(3)
	path := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(path, []byte("slug: "+slug+"\nname: Tenant "+slug+"\n"+extraYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", path)
	if err != nil {
		t.Fatalf("tenant apply: %v\n%s%s", err, out, errOut)
	}
	m := regexp.MustCompile(`created tenant \S+ \((ten_\w+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tenant apply printed no tenant id:\n%s", out)
	}
	return m[1], newClient(t, 0, token(t, m[1], "owner")).on(st.server)
}

// devEnv is the development environment's id.
func devEnv(t *testing.T, c *client) string {
	t.Helper()
	for _, e := range edges(c.ok(qEnvironments, nil), "environments") {
		if e["name"] == "development" {
			return e["id"].(string)
		}
	}
	t.Fatal("no development environment")
	return ""
}

// deployOn creates, publishes and deploys a workflow with c in envID.
func deployOn(t *testing.T, c *client, envID, slug string, def map[string]any) string {
	t.Helper()
	wf := str(c.ok(mCreateWF, map[string]any{"n": slug, "s": slug}), "createWorkflow.id")
	v := str(c.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
	c.ok(mPublish, map[string]any{"id": v})
	c.ok(mDeploy, map[string]any{"v": v, "e": envID})
	return wf
}

// TestFairDispatchAcrossTenants: tenant A starts 600 runs at once while the
// downstream API holds A's calls; tenant B then starts one run. Once the API
// lets A's calls through, B's call comes right after the few A steps that
// were in flight or in the queue (A's share), not after A's whole backlog as
// it would in a first-in-first-out queue. Then a worker is SIGKILLed and
// Redis wiped in the middle of A's backlog: every run still succeeds, with
// each run's call made (again only if the SIGKILL cut it), and nothing
// stays held.
func TestFairDispatchAcrossTenants(t *testing.T) {
	t.Parallel()
	const share, concurrency = 4, 4
	st := newProcessStack(t, 1, fmt.Sprintf("SLUICE_WORKER_CONCURRENCY=%d", concurrency), fmt.Sprintf("SLUICE_DISPATCH_SHARE=%d", share),
		"SLUICE_STEP_STALE_AFTER=2s", "SLUICE_WORKER_RECONCILE_INTERVAL=500ms", "SLUICE_DISPATCH_SWEEP=200ms")
	srv := newQueueServer(t, 5*time.Millisecond)
	gate := make(chan struct{})
	srv.mu.Lock()
	srv.gate, srv.gatePrefix = gate, "/a/"
	srv.mu.Unlock()
	idA, a := applyTenant(t, st, "fair-a", "")
	_, b := applyTenant(t, st, "fair-b", "")
	envA, envB := devEnv(t, a), devEnv(t, b)
	step := func(who string) map[string]any {
		s := engHTTP("call", "GET", srv.URL+"/"+who+"/{{ input.n }}")
		s["timeout"] = "30s"
		return engDef(nil, "steps.call.output.body", s)
	}
	wfA := deployOn(t, a, envA, "bulk", step("a"))
	wfB := deployOn(t, b, envB, "interactive", step("b"))

	const nA = 600
	ids := make([]string, nA)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range nA {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ids[i] = str(a.ok(mStartRun, map[string]any{"w": wfA, "e": envA, "i": map[string]any{"n": i}}), "startRun.id")
		}()
	}
	wg.Wait()
	// The suite's own workers share the database: their reconciler and
	// sweep may run this stack's steps too (with the default share, 32), as
	// any worker of a deployment would. So the bounds below allow for them.
	eventually(t, engWait, func() (bool, string) {
		_, _, n, _ := srv.snapshot()
		return n >= concurrency, fmt.Sprintf("%d of A's calls in flight, want at least %d", n, concurrency)
	})
	// A's backlog is held in Postgres, visible as the runs' queueReason.
	if r := heldRun(t, a, ids[nA-1]); r["status"] != "queued" || r["queueReason"] != "TENANT_SHARE" {
		t.Errorf("A's last run: status %v queueReason %v, want queued for TENANT_SHARE", r["status"], r["queueReason"])
	}
	runB := str(b.ok(mStartRun, map[string]any{"w": wfB, "e": envB, "i": map[string]any{"n": 0}}), "startRun.id")
	// startRun sent B's step to the queue before it answered, behind A's
	// share: let A's calls through.
	_, _, inFlight, _ := srv.snapshot()
	close(gate)
	if r := waitRun(t, b, runB, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
		t.Fatalf("B's run: %v", r)
	}
	order, _, _, _ := srv.snapshot()
	pos := slices.IndexFunc(order, func(p string) bool { return strings.HasPrefix(p, "/b/") })
	// In a first in, first out queue B's call would come after A's whole
	// backlog. Here it waits behind A's calls in flight and A's share in
	// this stack's queue; the suite's own workers share the database and
	// may run A's steps in parallel meanwhile (their sweep releases A's
	// held steps into their queue), so the bound leaves room for them.
	if pos < 0 || pos > nA*3/4 {
		t.Fatalf("B's call arrived %dth of %d (%d of A's in flight at the gate): behind most of A's backlog", pos+1, len(order), inFlight)
	}
	t.Logf("B's call arrived %dth (%d of A's in flight at the gate)", pos+1, inFlight)

	// A worker dies and Redis is wiped in the middle of A's backlog.
	victim := st.workers[0]
	_ = victim.cmd.Process.Kill()
	<-victim.done
	if err := st.redis().FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	w, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = w
	for _, id := range ids {
		if r := waitRun(t, a, id, 90*time.Second, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("A's run %s: %v", id, r)
		}
	}
	order, _, _, _ = srv.snapshot()
	paths := map[string]int{}
	for _, p := range order {
		paths[p]++
	}
	if len(paths) != nA+1 {
		t.Fatalf("%d distinct calls, want %d (one per run)", len(paths), nA+1)
	}
	t.Logf("%d calls for %d runs (a call cut by the SIGKILL is made again)", len(order), nA+1)
	var heldLeft int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM held_steps WHERE tenant_id = $1`, idA).Scan(&heldLeft); err != nil {
		t.Fatal(err)
	}
	if heldLeft != 0 {
		t.Fatalf("%d steps of A still held", heldLeft)
	}
}

// TestTenantMaxConcurrentSteps: a tenant whose plan caps it at 4 running
// steps starts 10 runs of 3 parallel calls: the downstream API never sees
// more than 4 at once, the database never shows more than 4 running, the
// waiting runs say TENANT_CONCURRENCY, and all 10 succeed.
func TestTenantMaxConcurrentSteps(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_WORKER_CONCURRENCY=10")
	srv := newQueueServer(t, 0)
	gate := make(chan struct{})
	srv.mu.Lock()
	srv.gate = gate
	srv.mu.Unlock()
	idC, c := applyTenant(t, st, "capped", "plan:\n  maxConcurrentSteps: 4\n")
	env := devEnv(t, c)
	def := engDef(nil, "",
		engHTTP("x", "GET", srv.URL+"/x/{{ input.n }}"),
		engHTTP("y", "GET", srv.URL+"/y/{{ input.n }}"),
		engHTTP("z", "GET", srv.URL+"/z/{{ input.n }}"))
	wf := deployOn(t, c, env, "fan", def)
	var ids []string
	for i := range 10 {
		ids = append(ids, str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{"n": i}}), "startRun.id"))
	}
	eventually(t, engWait, func() (bool, string) {
		_, _, n, _ := srv.snapshot()
		return n == 4, fmt.Sprintf("%d calls in flight, want 4", n)
	})
	running := func() int {
		var n int
		if err := ownerDB(t).QueryRow(`SELECT count(*) FROM step_runs WHERE tenant_id = $1 AND status = 'running'`, idC).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := running(); n != 4 {
		t.Fatalf("%d steps running in the database, want 4", n)
	}
	reasons := map[any]int{}
	for _, id := range ids {
		reasons[heldRun(t, c, id)["queueReason"]]++
	}
	if reasons["TENANT_CONCURRENCY"] == 0 {
		t.Fatalf("no run says TENANT_CONCURRENCY: %v", reasons)
	}
	// Sample the database while the backlog drains.
	close(gate)
	stop := make(chan struct{})
	sampled := make(chan int, 1)
	go func() {
		most := 0
		for {
			select {
			case <-stop:
				sampled <- most
				return
			default:
			}
			most = max(most, running())
		}
	}()
	for _, id := range ids {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("run %s: %v", id, r)
		}
	}
	close(stop)
	if most := <-sampled; most > 4 {
		t.Fatalf("%d steps running at once in the database, cap 4", most)
	}
	order, _, _, most := srv.snapshot()
	if len(order) != 30 || most != 4 {
		t.Fatalf("%d calls, at most %d at once; want 30 and 4", len(order), most)
	}
}
