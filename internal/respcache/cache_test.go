package respcache

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/viewer"
)

var db *testdb.DB

func TestMain(m *testing.M) { os.Exit(testdb.Main(m, "respcache", &db)) }

func request(url string) steps.CacheRequest {
	return steps.CacheRequest{Method: http.MethodGet, URL: url, BodySHA256: "e3b0",
		Policy: definition.CachePolicy{TTL: definition.Duration{Duration: time.Minute}}, Lease: 2 * time.Second}
}

func okFill(calls *atomic.Int64, pause time.Duration) steps.CacheFill {
	return func(ctx context.Context) (*steps.CachedResponse, bool) {
		calls.Add(1)
		time.Sleep(pause)
		return &steps.CachedResponse{Status: 200, Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(`{"a":1}`)}, false
	}
}

func TestConcurrentCallersShareOneFill(t *testing.T) {
	ctx := context.Background()
	tenant, err := db.Tenant(ctx, "share")
	if err != nil {
		t.Fatal(err)
	}
	b := New(db.App).For(tenant, "", "")
	var calls atomic.Int64
	states := make(chan steps.CacheState, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, state, err := b.Do(ctx, request("https://api.example.com/share"), okFill(&calls, 100*time.Millisecond))
			if err != nil {
				t.Error(err)
			}
			if state == steps.CacheHit && (resp == nil || string(resp.Body) != `{"a":1}` || resp.Header.Get("Content-Type") != "application/json") {
				t.Errorf("hit served %+v", resp)
			}
			states <- state
		}()
	}
	wg.Wait()
	close(states)
	count := map[steps.CacheState]int{}
	for s := range states {
		count[s]++
	}
	if calls.Load() != 1 || count[steps.CacheMiss] != 1 || count[steps.CacheHit] != 9 {
		t.Fatalf("fills %d, states %v", calls.Load(), count)
	}
}

// A worker that dies holding the lease blocks the key only until its lease
// ends: a waiting caller then fills.
func TestWaiterTakesOverADeadWorkersLease(t *testing.T) {
	ctx := context.Background()
	tenant, err := db.Tenant(ctx, "dead")
	if err != nil {
		t.Fatal(err)
	}
	c := New(db.App)
	b := c.For(tenant, "", "")
	r := request("https://api.example.com/dead")
	key, err := b.key(viewer.SystemContext(ctx, tenant), r)
	if err != nil {
		t.Fatal(err)
	}
	// The dead worker's lease, as lookupOrLease writes it.
	start := time.Now()
	deadUntil := start.Add(400 * time.Millisecond)
	err = store.InTenant(viewer.SystemContext(ctx, tenant), db.App, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		_, err = q.Exec(ctx, `INSERT INTO response_cache_entries (id, tenant_id, cache_key, created_at, updated_at, fill_token, fill_until)
			VALUES ($4, $1, $2, now(), now(), 'fill_dead', $3)`, tenant, key, deadUntil, ids.New(ids.ResponseCacheEntry))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	_, state, err := b.Do(ctx, r, okFill(&calls, 0))
	if err != nil || state != steps.CacheMiss || calls.Load() != 1 {
		t.Fatalf("state %q, fills %d, err %v", state, calls.Load(), err)
	}
	if time.Now().Before(deadUntil) {
		t.Fatal("filled while the dead worker's lease was still running")
	}
	if _, state, _ := b.Do(ctx, r, okFill(&calls, 0)); state != steps.CacheHit || calls.Load() != 1 {
		t.Fatalf("after the takeover: state %q, fills %d", state, calls.Load())
	}
}

// The key binds tenant and credential version: another tenant, or the
// same credential rotated, never reads the entry.
func TestEntriesAreKeyedByTenantAndCredentialVersion(t *testing.T) {
	ctx := context.Background()
	a, err := db.Tenant(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	other, err := db.Tenant(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	c := New(db.App)
	r := request("https://api.example.com/same")
	var calls atomic.Int64
	if _, state, err := c.For(a, "", "").Do(ctx, r, okFill(&calls, 0)); err != nil || state != steps.CacheMiss {
		t.Fatalf("first: %q %v", state, err)
	}
	if _, state, err := c.For(other, "", "").Do(ctx, r, okFill(&calls, 0)); err != nil || state != steps.CacheMiss || calls.Load() != 2 {
		t.Fatalf("other tenant: %q, fills %d, %v", state, calls.Load(), err)
	}
	if _, err := c.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if _, state, _ := c.For(a, "", "").Do(ctx, r, okFill(&calls, 0)); state != steps.CacheHit {
		t.Fatalf("a fresh entry was purged: %q", state)
	}
	if _, err := db.Owner.ExecContext(ctx, `UPDATE response_cache_entries SET fresh_until = now() - interval '2 minutes', stale_until = now() - interval '1 minute' WHERE tenant_id = $1`, a); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Purge(ctx); err != nil || n != 1 {
		t.Fatalf("purge of the expired entry: %d, %v", n, err)
	}
}

func TestPurgeKeepsTheNewestEntriesUpToTheCap(t *testing.T) {
	ctx := context.Background()
	tenant, err := db.Tenant(ctx, "cap")
	if err != nil {
		t.Fatal(err)
	}
	c := New(db.App)
	c.maxEntries = 3
	var calls atomic.Int64
	for i := range 5 {
		if _, _, err := c.For(tenant, "", "").Do(ctx, request(fmt.Sprintf("https://api.example.com/cap/%d", i)), okFill(&calls, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 2; i < 5; i++ {
		if _, state, _ := c.For(tenant, "", "").Do(ctx, request(fmt.Sprintf("https://api.example.com/cap/%d", i)), okFill(&calls, 0)); state != steps.CacheHit {
			t.Errorf("entry %d, one of the 3 newest, after the purge: %q", i, state)
		}
	}
	rows, err := db.Owner.QueryContext(ctx, `SELECT count(*) FROM response_cache_entries WHERE tenant_id = $1`, tenant)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n int
	if !rows.Next() || rows.Scan(&n) != nil || n != 3 {
		t.Fatalf("entries after the purge: %d, want 3", n)
	}
}

// BenchmarkHit measures serving a fresh entry (one tenant transaction, one
// indexed read), the cost a cached step pays instead of its call.
func BenchmarkHit(b *testing.B) {
	ctx := context.Background()
	tenant, err := db.Tenant(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	c := New(db.App).For(tenant, "", "")
	r := request("https://api.example.com/bench")
	var calls atomic.Int64
	if _, _, err := c.Do(ctx, r, okFill(&calls, 0)); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, state, err := c.Do(ctx, r, okFill(&calls, 0)); err != nil || state != steps.CacheHit {
			b.Fatalf("%q %v", state, err)
		}
	}
}
