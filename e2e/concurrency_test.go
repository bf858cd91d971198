package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// customerServer counts the calls in flight per customer (the path's
// first segment) and the most ever; calls of a gated customer wait until
// the gate opens, the others answer after a short delay.
type customerServer struct {
	*httptest.Server
	mu       sync.Mutex
	inFlight map[string]int
	most     map[string]int
	calls    map[string]int
	gated    string
	gate     chan struct{}
}

func newCustomerServer(t *testing.T, gated string) *customerServer {
	s := &customerServer{inFlight: map[string]int{}, most: map[string]int{}, calls: map[string]int{}, gated: gated, gate: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		customer := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")[0]
		s.mu.Lock()
		s.inFlight[customer]++
		s.calls[customer]++
		s.most[customer] = max(s.most[customer], s.inFlight[customer])
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inFlight[customer]--
			s.mu.Unlock()
		}()
		if customer == s.gated {
			select {
			case <-s.gate:
			case <-r.Context().Done():
				return
			}
		}
		select {
		case <-time.After(30 * time.Millisecond): // long enough for an overlap to show
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"customer":%q}`, customer)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *customerServer) stats(customer string) (inFlight, most, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight[customer], s.most[customer], s.calls[customer]
}

// TestConcurrencyKeyPerCustomer: `concurrency {limit: 1, key:
// "input.customer"}`: two runs of one customer never run at once (the
// downstream API sees at most one call of a customer in flight) while
// another customer's runs proceed; a waiting run says KEY_CONCURRENCY; all
// finish. Two workers, so the runs of one customer could overlap.
func TestConcurrencyKeyPerCustomer(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2, "SLUICE_WORKER_CONCURRENCY=8")
	srv := newCustomerServer(t, "acme")
	_, c := applyTenant(t, st, "keys", "")
	env := devEnv(t, c)
	input := map[string]any{"type": "object", "required": []any{"customer", "n"},
		"properties": map[string]any{"customer": map[string]any{"type": "string"}, "n": map[string]any{"type": "integer"}}}
	def := engDef(input, "",
		engHTTP("x", "GET", srv.URL+"/{{ input.customer }}/x/{{ input.n }}"),
		engHTTP("y", "GET", srv.URL+"/{{ input.customer }}/y/{{ input.n }}", "x"))
	def["concurrency"] = map[string]any{"limit": 1, "key": "input.customer"}
	wf := deployOn(t, c, env, "per-customer", def)
	start := func(customer string, n int) string {
		return str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{"customer": customer, "n": n}}), "startRun.id")
	}
	var acme, bolt []string
	for i := range 4 {
		acme = append(acme, start("acme", i))
		bolt = append(bolt, start("bolt", i))
	}
	// acme's first run is at the gate; the others of acme wait for the key.
	eventually(t, engWait, func() (bool, string) {
		n, _, _ := srv.stats("acme")
		return n == 1, fmt.Sprintf("%d acme calls in flight, want 1", n)
	})
	for _, id := range acme[1:] {
		r := heldRun(t, c, id)
		if r["status"] != "queued" || r["queueReason"] != "KEY_CONCURRENCY" || r["queuedSince"] == nil {
			t.Fatalf("waiting acme run %s: status %v queueReason %v since %v", id, r["status"], r["queueReason"], r["queuedSince"])
		}
	}
	// Another customer proceeds meanwhile, one run at a time too.
	for _, id := range bolt {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("bolt run %s: %v", id, r)
		}
	}
	if _, most, calls := srv.stats("acme"); most != 1 || calls != 1 {
		t.Fatalf("acme: %d calls, at most %d at once, while gated; want 1 and 1", calls, most)
	}
	close(srv.gate)
	for _, id := range acme {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("acme run %s: %v", id, r)
		}
	}
	for _, customer := range []string{"acme", "bolt"} {
		if _, most, calls := srv.stats(customer); most != 1 || calls != 8 {
			t.Fatalf("%s: %d calls, at most %d in flight; want 8 and 1", customer, calls, most)
		}
	}
	if r := heldRun(t, c, acme[3]); r["queueReason"] != nil {
		t.Fatalf("a finished run says %v", r["queueReason"])
	}
}
