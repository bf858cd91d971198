package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// TestTenantMaxConcurrentRuns: a tenant whose plan caps it at 2 unfinished
// runs starts 5 runs of two calls in a row: never more than 2 of its runs
// are running (sampled from the database while they drain) and the
// downstream API never sees more than 2 calls at once, the waiting runs say
// TENANT_CONCURRENCY with a since, and all 5 succeed.
func TestTenantMaxConcurrentRuns(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_WORKER_CONCURRENCY=8")
	srv := newQueueServer(t, 0)
	gate := make(chan struct{})
	srv.mu.Lock()
	srv.gate = gate
	srv.mu.Unlock()
	idC, c := applyTenant(t, st, "runcap", "plan:\n  maxConcurrentRuns: 2\n")
	env := devEnv(t, c)
	def := engDef(nil, "",
		engHTTP("x", "GET", srv.URL+"/x/{{ input.n }}"),
		engHTTP("y", "GET", srv.URL+"/y/{{ input.n }}", "x"))
	wf := deployOn(t, c, env, "two-calls", def)
	var ids []string
	for i := range 5 {
		ids = append(ids, str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{"n": i}}), "startRun.id"))
	}
	eventually(t, engWait, func() (bool, string) {
		_, _, n, _ := srv.snapshot()
		return n == 2, fmt.Sprintf("%d calls in flight, want 2", n)
	})
	for _, id := range ids[2:] {
		r := heldRun(t, c, id)
		if r["status"] != "queued" || r["queueReason"] != "TENANT_CONCURRENCY" || r["queuedSince"] == nil {
			t.Fatalf("waiting run %s: status %v queueReason %v since %v", id, r["status"], r["queueReason"], r["queuedSince"])
		}
	}
	running := func() int {
		var n int
		if err := ownerDB(t).QueryRow(`SELECT count(*) FROM runs WHERE tenant_id = $1 AND status = 'running'`, idC).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := running(); n != 2 {
		t.Fatalf("%d runs running in the database, want 2", n)
	}
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
	if most := <-sampled; most > 2 {
		t.Fatalf("%d runs running at once in the database, cap 2", most)
	}
	if order, _, _, most := srv.snapshot(); len(order) != 10 || most > 2 {
		t.Fatalf("%d calls, at most %d at once; want 10 and at most 2", len(order), most)
	}
	if r := heldRun(t, c, ids[4]); r["queueReason"] != nil {
		t.Fatalf("a finished run says %v", r["queueReason"])
	}
}

const (
	qWfConcurrency = `query($w: ID!, $e: ID!) { workflowConcurrency(workflowID: $w, environmentID: $e) {
		workflowID environmentID source concurrency { limit key onLimit } override { limit key onLimit } updatedBy updatedAt } }`
	mSetWfConcurrency = `mutation($w: ID!, $e: ID!, $c: ConcurrencySettingInput) { setWorkflowConcurrency(input: {workflowID: $w, environmentID: $e, concurrency: $c}) {
		source concurrency { limit key onLimit } override { limit } } }`
)

// TestWorkflowConcurrencyPerEnvironment: setWorkflowConcurrency {limit 1,
// key input.customer} on an environment whose definition has no limit
// takes effect: one customer's runs never overlap while another's
// proceed, and a waiting run says KEY_CONCURRENCY; workflowConcurrency says
// where the setting comes from; bad settings are VALIDATION with the path
// and write nothing; another tenant can neither read nor set it; null
// removes it.
func TestWorkflowConcurrencyPerEnvironment(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_WORKER_CONCURRENCY=8")
	srv := newCustomerServer(t, "acme")
	_, c := applyTenant(t, st, "envlimit", "")
	_, other := applyTenant(t, st, "envlimit-other", "")
	env := devEnv(t, c)
	input := map[string]any{"type": "object", "required": []any{"customer", "n"},
		"properties": map[string]any{"customer": map[string]any{"type": "string"}, "n": map[string]any{"type": "integer"}}}
	wf := deployOn(t, c, env, "no-limit", engDef(input, "", engHTTP("x", "GET", srv.URL+"/{{ input.customer }}/x/{{ input.n }}")))
	vars := func(set map[string]any) map[string]any { return map[string]any{"w": wf, "e": env, "c": set} }
	if got := get(c.ok(qWfConcurrency, vars(nil)), "workflowConcurrency"); get(got, "source") != nil || get(got, "concurrency") != nil {
		t.Fatalf("before any setting: %v", got)
	}

	// Refused before anything is written.
	for _, b := range []struct {
		path string
		set  map[string]any
	}{
		{"input.concurrency.limit", map[string]any{"limit": 0}},
		{"input.concurrency.limit", map[string]any{"limit": 10001}},
		{"input.concurrency.key", map[string]any{"limit": 1, "key": "input.customer +"}},
		{"input.concurrency.key", map[string]any{"limit": 1, "key": "steps.x.output.body"}},
		{"input.concurrency.key", map[string]any{"limit": 1, "key": "input.customer + 1"}}, // a type error against the deployed input schema
		{"input.concurrency.onLimit", map[string]any{"limit": 1, "onLimit": "later"}},
	} {
		r := c.fail("VALIDATION", mSetWfConcurrency, vars(b.set))
		if !strings.Contains(fmt.Sprint(r.Errors), b.path) {
			t.Errorf("%v: error %v does not name %s", b.set, r.Errors, b.path)
		}
	}
	if got := get(c.ok(qWfConcurrency, vars(nil)), "workflowConcurrency.override"); got != nil {
		t.Fatalf("refused settings wrote %v", got)
	}
	// Another tenant: not found, either way.
	other.fail("NOT_FOUND", mSetWfConcurrency, vars(map[string]any{"limit": 5}))
	other.fail("NOT_FOUND", qWfConcurrency, vars(nil))

	set := c.ok(mSetWfConcurrency, vars(map[string]any{"limit": 1, "key": "input.customer"}))
	if str(set, "setWorkflowConcurrency.source") != "ENVIRONMENT" || get(set, "setWorkflowConcurrency.concurrency.onLimit") != "queue" {
		t.Fatalf("set: %v", set)
	}
	start := func(customer string, n int) string {
		return str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{"customer": customer, "n": n}}), "startRun.id")
	}
	var acme, bolt []string
	for i := range 3 {
		acme = append(acme, start("acme", i))
		bolt = append(bolt, start("bolt", i))
	}
	eventually(t, engWait, func() (bool, string) {
		n, _, _ := srv.stats("acme")
		return n == 1, fmt.Sprintf("%d acme calls in flight, want 1", n)
	})
	for _, id := range acme[1:] {
		if r := heldRun(t, c, id); r["status"] != "queued" || r["queueReason"] != "KEY_CONCURRENCY" {
			t.Fatalf("waiting acme run %s: %v", id, r)
		}
	}
	for _, id := range bolt {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("bolt run %s: %v", id, r)
		}
	}
	close(srv.gate)
	for _, id := range acme {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("acme run %s: %v", id, r)
		}
	}
	for _, customer := range []string{"acme", "bolt"} {
		if _, most, calls := srv.stats(customer); most != 1 || calls != 3 {
			t.Fatalf("%s: %d calls, at most %d in flight; want 3 and 1", customer, calls, most)
		}
	}

	removed := c.ok(mSetWfConcurrency, vars(nil))
	if get(removed, "setWorkflowConcurrency.source") != nil || get(removed, "setWorkflowConcurrency.override") != nil {
		t.Fatalf("removed: %v", removed)
	}
}
