package runs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/steps"
)

// stubLimiter defers the first `waits` calls by `wait` on the test clock.
type stubLimiter struct {
	now   func() time.Time
	wait  time.Duration
	waits atomic.Int64
}

func (l *stubLimiter) Acquire(_ context.Context, c steps.LimitedCall) (func(), error) {
	if l.waits.Add(-1) >= 0 {
		return nil, &steps.Deferral{Reason: steps.DeferRateLimit, Cause: "rate", Scope: "p:test", Until: l.now().Add(l.wait)}
	}
	return func() {}, nil
}

func (l *stubLimiter) Observe(context.Context, steps.LimitedCall, int, http.Header) *steps.Deferral {
	return nil
}

func okServer(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestDeferralKeepsTheAttempt: a call the limiter defers reschedules the
// same attempt (number 1, queued, scheduled at the slot) with the step
// queued until then and a step.waiting event; at the slot it runs and
// succeeds with one attempt, no retry spent.
func TestDeferralKeepsTheAttempt(t *testing.T) {
	x := newH(t)
	srv, hits := okServer(t)
	lim := &stubLimiter{now: x.clock.Now, wait: 10 * time.Second}
	lim.waits.Store(2)
	x.e.executor.WithLimiter(lim)
	wf := x.deploy(def("steps.call.output.body", map[string]any{"id": "call", "type": "http",
		"request": map[string]any{"method": "GET", "url": srv.URL + "/x"}, "retry": map[string]any{"maxAttempts": 1}}))
	id := x.start(wf, nil)
	x.drain()
	sr := x.step(id, "call")
	if sr.Status != steprun.StatusQueued || sr.Attempts != 1 || sr.ReadyAt == nil {
		t.Fatalf("deferred step: status %s attempts %d readyAt %v", sr.Status, sr.Attempts, sr.ReadyAt)
	}
	atts := x.attempts(id, "call")
	if len(atts) != 1 || atts[0].Status != stepattempt.StatusQueued || atts[0].Number != 1 || atts[0].StartedAt != nil || !atts[0].ScheduledAt.Equal(*sr.ReadyAt) {
		t.Fatalf("deferred attempt: %+v", atts)
	}
	ev := x.event(id, "step.waiting", "call")
	if ev == nil || ev.Data["reason"] != "rate_limit" || ev.Data["cause"] != "rate" || ev.Data["until"] == nil || ev.Data["calls"] != nil {
		t.Fatalf("step.waiting: %+v", ev)
	}
	if hits.Load() != 0 {
		t.Fatal("a deferred call was sent")
	}
	// At the slot, its wake-up (a task of its own, or the reconciler
	// reading ready_at) runs it: deferred once more, then sent.
	for i := 0; i < 5 && x.run(id).Status != "succeeded"; i++ {
		x.clock.Advance(11 * time.Second)
		x.drain()
		due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range due {
			if err := x.execute(task); err != nil {
				t.Fatal(err)
			}
		}
	}
	waits := 0
	for _, e := range x.events(id) {
		if e.Type == "step.waiting" {
			waits++
		}
	}
	if waits != 2 {
		t.Fatalf("%d step.waiting events, want 2", waits)
	}
	r := x.run(id)
	sr = x.step(id, "call")
	if r.Status != "succeeded" || sr.Attempts != 1 || hits.Load() != 1 {
		t.Fatalf("after the waits: run %s, step attempts %d, calls %d", r.Status, sr.Attempts, hits.Load())
	}
	if atts := x.attempts(id, "call"); len(atts) != 1 || atts[0].Status != stepattempt.StatusSucceeded {
		t.Fatalf("attempts: %+v", atts)
	}
}

// TestDeferralPastTheCapIsTransient: a wait past SetMaxDeferral is the
// transient failure it wraps: the retry policy decides (here: one
// attempt, so the step fails).
func TestDeferralPastTheCapIsTransient(t *testing.T) {
	x := newH(t)
	srv, _ := okServer(t)
	SetMaxDeferral(time.Hour)
	t.Cleanup(func() { SetMaxDeferral(0) })
	lim := &stubLimiter{now: x.clock.Now, wait: 2 * time.Hour}
	lim.waits.Store(1)
	x.e.executor.WithLimiter(lim)
	wf := x.deploy(def("steps.call.output.body", map[string]any{"id": "call", "type": "http",
		"request": map[string]any{"method": "GET", "url": srv.URL + "/x"}, "retry": map[string]any{"maxAttempts": 1}}))
	id := x.start(wf, nil)
	x.drain()
	sr := x.step(id, "call")
	if sr.Status != steprun.StatusFailed || sr.ErrorClass == nil || *sr.ErrorClass != "transient" {
		t.Fatalf("step: %s %v", sr.Status, sr.ErrorClass)
	}
}
