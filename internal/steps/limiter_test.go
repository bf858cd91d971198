package steps_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/retryafter"
	"github.com/sluicehq/sluice/internal/steps"
)

// fakeLimiter defers the first `waits` checks by `wait` and turns a
// response's Retry-After into a cooldown deferral, counting what it sees.
type fakeLimiter struct {
	waits    atomic.Int64
	wait     time.Duration
	checks   atomic.Int64
	released atomic.Int64
	observed atomic.Int64
	last     steps.LimitedCall
}

func (l *fakeLimiter) Acquire(_ context.Context, c steps.LimitedCall) (func(), error) {
	l.checks.Add(1)
	l.last = c
	if l.waits.Add(-1) >= 0 {
		return nil, &steps.Deferral{Reason: steps.DeferRateLimit, Cause: "rate", Scope: "p:x", Until: time.Now().Add(l.wait)}
	}
	return func() { l.released.Add(1) }, nil
}

func (l *fakeLimiter) Observe(_ context.Context, c steps.LimitedCall, status int, h http.Header) *steps.Deferral {
	l.observed.Add(1)
	if d := retryafter.Cooldown(h, time.Now()); d > 0 {
		return &steps.Deferral{Reason: steps.DeferRateLimit, Cause: "cooldown", Scope: "h:" + c.Host, Until: time.Now().Add(d), StatusCode: status}
	}
	return nil
}

func limitedRequest(t *testing.T, url string, wait bool) (context.Context, steps.Request) {
	ctx := steps.WithLimitScope(context.Background(), steps.LimitScope{TenantID: "ten_1", EnvironmentID: "env_1", Credential: "crm", AttemptID: "att_1", WaitInProcess: wait})
	return ctx, steps.Request{RunID: "run_1", StepID: "call",
		Step: step(t, `{"id":"call","type":"http","request":{"method":"GET","url":"`+url+`/x"}}`)}
}

// TestLimiterDefersBeforeSending: a check that says wait sends nothing and
// returns a transient *Error wrapping the Deferral (errors.As finds it).
func TestLimiterDefersBeforeSending(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1); writeJSON(w, 200, map[string]any{}) })
	lim := &fakeLimiter{wait: time.Minute}
	lim.waits.Store(1)
	ctx, req := limitedRequest(t, srv.URL, false)
	_, err := newExecutor().WithLimiter(lim).HTTP(ctx, req)
	e := stepError(t, err)
	var d *steps.Deferral
	if !errors.As(err, &d) || e.Class != steps.Transient || !e.NotSent || d.Cause != "rate" {
		t.Fatalf("err = %#v", e)
	}
	if hits.Load() != 0 {
		t.Fatal("a deferred call was sent")
	}
	if lim.last.Host != srv.Listener.Addr().String() || lim.last.Credential != "crm" || lim.last.Hold < 30*time.Second {
		t.Fatalf("limited call: %+v", lim.last)
	}
	// Without a scope (no run), nothing is limited.
	if _, err := newExecutor().WithLimiter(lim).HTTP(context.Background(), req); err != nil || lim.checks.Load() != 1 {
		t.Fatalf("unscoped call: %v, checks %d", err, lim.checks.Load())
	}
}

// TestLimiterCooldownFrom429: a 429 with Retry-After comes back as a
// deferral carrying the status, and the call's slot is released.
func TestLimiterCooldownFrom429(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "3")
		writeJSON(w, 429, map[string]any{"error": "slow down"})
	})
	lim := &fakeLimiter{}
	ctx, req := limitedRequest(t, srv.URL, false)
	res, err := newExecutor().WithLimiter(lim).HTTP(ctx, req)
	var d *steps.Deferral
	if !errors.As(err, &d) || d.StatusCode != 429 || d.Cause != "cooldown" || time.Until(d.Until) < 2*time.Second {
		t.Fatalf("err = %v (%+v)", err, d)
	}
	if lim.observed.Load() != 1 || lim.released.Load() != 1 {
		t.Fatalf("observed %d, released %d", lim.observed.Load(), lim.released.Load())
	}
	if res == nil || len(res.Calls) != 1 || res.Calls[0].StatusCode != 429 {
		t.Fatalf("the refused call is recorded: %+v", res)
	}
}

// TestLimiterWaitsInProcess: with WaitInProcess (map items) the call waits
// for its slot and is sent, no deferral.
func TestLimiterWaitsInProcess(t *testing.T) {
	var hits atomic.Int64
	srv := server(t, func(w http.ResponseWriter, r *http.Request) { hits.Add(1); writeJSON(w, 200, map[string]any{}) })
	lim := &fakeLimiter{wait: 50 * time.Millisecond}
	lim.waits.Store(2)
	ctx, req := limitedRequest(t, srv.URL, true)
	start := time.Now()
	if _, err := newExecutor().WithLimiter(lim).HTTP(ctx, req); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != 1 || lim.checks.Load() != 3 || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("hits %d, checks %d, took %s", hits.Load(), lim.checks.Load(), time.Since(start))
	}
}
