package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/testdb"
)

// newTestLimiter is a limiter on a reserved Redis database whose tenant
// policies are set as given (no Postgres: the version token matches).
func newTestLimiter(t testing.TB, tenantID string, ps ...policy) *Limiter {
	t.Helper()
	rdb := testdb.Redis(t, "ratelimit-test")
	l := NewLimiter(LimiterOptions{Redis: rdb, ConcurrencyPoll: 50 * time.Millisecond})
	if err := rdb.Set(context.Background(), versionKey(tenantID), "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	l.cache.Store(tenantID, &policySet{version: "v1", loaded: time.Now().Add(time.Hour), policies: ps})
	return l
}

func call(tenantID, attempt string) steps.LimitedCall {
	return steps.LimitedCall{LimitScope: steps.LimitScope{TenantID: tenantID, EnvironmentID: "env_1", Credential: "crm", AttemptID: attempt},
		Host: "api.test", Hold: time.Minute}
}

func deferral(t *testing.T, err error) *steps.Deferral {
	t.Helper()
	var d *steps.Deferral
	if !errors.As(err, &d) {
		t.Fatalf("want a deferral, got %v", err)
	}
	return d
}

// TestGCRAReservesSlots: at 2.5/s with no burst, the first call goes and
// the next ones get slots 400ms apart, reserved: each attempt coming back at
// its slot goes, even though others asked in between; before it, it waits.
// The limiter's clock is Redis's (TIME in its script), so the interval is
// long enough that a busy machine's pause between two calls cannot reach
// the next slot.
func TestGCRAReservesSlots(t *testing.T) {
	ctx := context.Background()
	const iv = 400 * time.Millisecond
	l := newTestLimiter(t, "ten_a", policy{id: "p1", host: "api.test", across: true, interval: iv})
	if _, err := l.Acquire(ctx, call("ten_a", "a1")); err != nil {
		t.Fatalf("first call: %v", err)
	}
	start := time.Now()
	d2 := deferral(t, mustWait(l.Acquire(ctx, call("ten_a", "a2"))))
	d3 := deferral(t, mustWait(l.Acquire(ctx, call("ten_a", "a3"))))
	if d2.Cause != "rate" || d2.Scope != "p:p1" || d2.Reason != steps.DeferRateLimit {
		t.Fatalf("deferral: %+v", d2)
	}
	if gap := d3.Until.Sub(d2.Until); gap < iv-10*time.Millisecond || gap > iv+10*time.Millisecond {
		t.Fatalf("slots %s apart, want %s", gap, iv)
	}
	if w := d2.Until.Sub(start); w > iv+50*time.Millisecond {
		t.Fatalf("second slot %s away", w)
	}
	// Before its slot, a2 still waits for the same slot (not a new one).
	if d := deferral(t, mustWait(l.Acquire(ctx, call("ten_a", "a2")))); !d.Until.Equal(d2.Until) {
		t.Fatalf("a2 asked again early: %s, want its reserved %s", d.Until, d2.Until)
	}
	time.Sleep(time.Until(d2.Until) + 5*time.Millisecond) // a2's slot is due
	if _, err := l.Acquire(ctx, call("ten_a", "a2")); err != nil {
		t.Fatalf("a2 at its slot: %v", err)
	}
	time.Sleep(time.Until(d3.Until) + 5*time.Millisecond)
	if _, err := l.Acquire(ctx, call("ten_a", "a3")); err != nil {
		t.Fatalf("a3 at its slot: %v", err)
	}
	// The reservations are spent: a2 again is a new call and waits.
	d4 := deferral(t, mustWait(l.Acquire(ctx, call("ten_a", "a2"))))
	if d4.Cause != "rate" {
		t.Fatalf("a2 again: %+v", d4)
	}
	// Coming back well after its slot (a slow worker), it does not go at
	// once with others delayed alike: it takes a new slot.
	time.Sleep(time.Until(d4.Until) + 5*iv/2)
	_, _ = l.Acquire(ctx, call("ten_a", "a9")) // another call takes the free slot now
	if _, err := l.Acquire(ctx, call("ten_a", "a2")); err == nil {
		t.Fatal("a reservation used late went at once")
	}
}

// TestConcurrencyHoldsExpire: maxConcurrent 1 refuses a second call while
// the first holds its slot, lets it go once released, and a holder that
// never releases (a killed worker) loses its slot when its hold ends.
func TestConcurrencyHoldsExpire(t *testing.T) {
	ctx := context.Background()
	l := newTestLimiter(t, "ten_b", policy{id: "p2", credential: true, environmentID: "env_1", name: "crm", maxConcurrent: 1})
	release, err := l.Acquire(ctx, call("ten_b", "b1"))
	if err != nil {
		t.Fatal(err)
	}
	if d := deferral(t, mustWait(l.Acquire(ctx, call("ten_b", "b2")))); d.Cause != "concurrency" || d.Scope != "p:p2" {
		t.Fatalf("second call: %+v", d)
	}
	release()
	// b3 takes the slot with a 200ms hold and never releases it (its worker
	// was killed): b4 waits, then goes once the hold ends.
	short := call("ten_b", "b3")
	short.Hold = 200 * time.Millisecond
	if _, err := l.Acquire(ctx, short); err != nil {
		t.Fatalf("after release: %v", err)
	}
	deferral(t, mustWait(l.Acquire(ctx, call("ten_b", "b4"))))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := l.Acquire(ctx, call("ten_b", "b4"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a dead holder's slot never freed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Another credential is not limited by p2.
	other := call("ten_b", "b5")
	other.Credential = "billing"
	if _, err := l.Acquire(ctx, other); err != nil {
		t.Fatalf("another credential: %v", err)
	}
}

// TestCooldownHoldsTheScope: a cooldown of a host holds every call to it
// (no policy needed), and no other host's or tenant's.
func TestCooldownHoldsTheScope(t *testing.T) {
	ctx := context.Background()
	l := newTestLimiter(t, "ten_c")
	until := time.Now().Add(time.Second)
	if err := cooldownScript.Run(ctx, l.rdb, []string{cooldownKey("ten_c", hostBucket("api.test"))}, until.UnixMilli(), 2000).Err(); err != nil {
		t.Fatal(err)
	}
	d := deferral(t, mustWait(l.Acquire(ctx, call("ten_c", "c1"))))
	if d.Cause != "cooldown" || d.Scope != "h:api.test" || d.Until.Before(until.Truncate(time.Millisecond)) {
		t.Fatalf("during the cooldown: %+v (until %s)", d, until)
	}
	other := call("ten_c", "c2")
	other.Host = "other.test"
	if _, err := l.Acquire(ctx, other); err != nil {
		t.Fatalf("another host: %v", err)
	}
	if err := l.rdb.Set(ctx, versionKey("ten_d"), "v1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	l.cache.Store("ten_d", &policySet{version: "v1", loaded: time.Now().Add(time.Hour)})
	if _, err := l.Acquire(ctx, call("ten_d", "d1")); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	// An earlier cooldown never shortens a later one.
	if err := cooldownScript.Run(ctx, l.rdb, []string{cooldownKey("ten_c", hostBucket("api.test"))}, time.Now().UnixMilli(), 2000).Err(); err != nil {
		t.Fatal(err)
	}
	deferral(t, mustWait(l.Acquire(ctx, call("ten_c", "c3"))))
}

func mustWait(_ func(), err error) error { return err }

// BenchmarkAcquire is the check's cost: one Redis round trip with no
// policy, and with a rate and a concurrency policy (plus the release).
func BenchmarkAcquire(b *testing.B) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		ps   []policy
	}{
		{"no policy", nil},
		{"rate and concurrency", []policy{{id: "pb", host: "api.test", across: true, interval: time.Millisecond, tolerance: time.Hour, maxConcurrent: 1000}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			l := newTestLimiter(b, "ten_bench", tc.ps...)
			for b.Loop() {
				release, err := l.Acquire(ctx, call("ten_bench", "x"))
				if err != nil {
					b.Fatal(err)
				}
				if release != nil {
					release()
				}
			}
		})
	}
}
