package e2e

import (
	"fmt"
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
