package steps_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/internal/steps"
)

// memCache is a one-entry ResponseCache: fresh or expired, and an error to
// answer with.
type memCache struct {
	entry *steps.CachedResponse
	fresh bool
	err   error
	last  steps.CacheRequest
}

func (m *memCache) Do(ctx context.Context, r steps.CacheRequest, fill steps.CacheFill) (*steps.CachedResponse, steps.CacheState, error) {
	m.last = r
	if m.err != nil {
		return nil, "", m.err
	}
	if m.entry != nil && m.fresh {
		return m.entry, steps.CacheHit, nil
	}
	got, transient := fill(ctx)
	if got != nil {
		m.entry, m.fresh = got, true
		return nil, steps.CacheMiss, nil
	}
	if transient && m.entry != nil {
		return m.entry, steps.CacheStale, nil
	}
	return nil, steps.CacheMiss, nil
}

func TestHTTPCacheHitSendsNothingAndStaleStandsInForAFailure(t *testing.T) {
	var calls atomic.Int64
	var down atomic.Bool
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		writeJSON(w, 200, map[string]any{"subject": "cached"})
	})
	s := step(t, `{"id":"fetch","type":"http","request":{"method":"GET","url":"`+srv.URL+`/t"},"cache":{"ttl":"60s","staleIfError":"1h"}}`)
	cache := &memCache{}
	run := func() (*steps.Result, error) {
		return newExecutor().HTTP(context.Background(), steps.Request{RunID: "run_1", StepID: "fetch", Step: s, Cache: cache})
	}

	res, err := run()
	if err != nil || res.Calls[0].Cache != "miss" || calls.Load() != 1 {
		t.Fatalf("first: %v %+v calls %d", err, res, calls.Load())
	}
	res, err = run()
	if err != nil || res.Calls[0].Cache != "hit" || res.Calls[0].DurationMs != 0 || calls.Load() != 1 {
		t.Fatalf("hit: %v %+v calls %d", err, res, calls.Load())
	}
	if body, _ := res.Output["body"].(map[string]any); body["subject"] != "cached" || res.Output["status"] != 200 {
		t.Fatalf("hit output: %v", res.Output)
	}
	if cache.last.Method != "GET" || cache.last.URL != srv.URL+"/t" || cache.last.Lease <= 0 {
		t.Fatalf("cache request: %+v", cache.last)
	}

	cache.fresh = false
	down.Store(true)
	res, err = run()
	if err != nil || res.Calls[0].Cache != "stale" || res.Calls[0].Error != "" || calls.Load() != 2 {
		t.Fatalf("stale: %v %+v calls %d", err, res, calls.Load())
	}

	// A cache that cannot answer leaves the step to call as if uncached.
	cache.err = errors.New("database down")
	down.Store(false)
	res, err = run()
	if err != nil || res.Calls[0].Cache != "" || calls.Load() != 3 {
		t.Fatalf("cache error: %v %+v calls %d", err, res, calls.Load())
	}
}
