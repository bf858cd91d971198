package backoff_test

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/backoff"
)

func TestCeilingSchedules(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name string
		e    backoff.Exponential
		want []time.Duration
	}{
		// Step retries with the default policy (README "Retry defaults").
		{"step default", backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}},
		// serve and worker waiting for Postgres or Redis at start.
		{"startup", backoff.Exponential{Initial: 250 * ms, Max: 5 * time.Second, Coefficient: 2},
			[]time.Duration{250 * ms, 500 * ms, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}},
		// The live-event hub reconnecting to Redis.
		{"reconnect", backoff.Exponential{Initial: 50 * ms, Max: 2 * time.Second, Coefficient: 2},
			[]time.Duration{50 * ms, 100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2 * time.Second, 2 * time.Second}},
		{"coefficient 1", backoff.Exponential{Initial: 3 * time.Second, Max: time.Minute, Coefficient: 1},
			[]time.Duration{3 * time.Second, 3 * time.Second, 3 * time.Second}},
		{"coefficient 1.5", backoff.Exponential{Initial: 2 * time.Second, Max: 10 * time.Second, Coefficient: 1.5},
			[]time.Duration{2 * time.Second, 3 * time.Second, 4500 * ms, 6750 * ms, 10 * time.Second}},
	} {
		for i, want := range tc.want {
			if got := tc.e.Ceiling(i + 1); got != want {
				t.Errorf("%s: Ceiling(%d) = %v, want %v", tc.name, i+1, got, want)
			}
		}
		if got := tc.e.Ceiling(0); got != tc.want[0] {
			t.Errorf("%s: Ceiling(0) = %v, want the first wait %v", tc.name, got, tc.want[0])
		}
		if got := tc.e.Ceiling(100000); got != tc.e.Max && tc.e.Coefficient > 1 {
			t.Errorf("%s: Ceiling(100000) = %v, want the cap %v", tc.name, got, tc.e.Max)
		}
	}
}

// Delay is the ceiling with equal jitter: within [ceiling/2, ceiling], the
// same for the same random source, and never shrinking with coefficient 2.
func TestDelayBounds(t *testing.T) {
	e := backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2}
	rnd := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		prev := time.Duration(0)
		for attempt := 1; attempt <= 20; attempt++ {
			c := e.Ceiling(attempt)
			d := e.Delay(attempt, rnd)
			if d < c/2 || d > c {
				t.Fatalf("trial %d attempt %d: Delay = %v, want within [%v, %v]", trial, attempt, d, c/2, c)
			}
			if c < e.Max && d < prev {
				t.Fatalf("trial %d attempt %d: Delay %v shrank from %v", trial, attempt, d, prev)
			}
			prev = d
		}
	}
	if a, b := e.Delay(3, rand.New(rand.NewPCG(7, 7))), e.Delay(3, rand.New(rand.NewPCG(7, 7))); a != b {
		t.Errorf("Delay with identical sources differs: %v vs %v", a, b)
	}
	// A huge coefficient or attempt never overflows past the cap.
	huge := backoff.Exponential{Initial: time.Hour, Max: 24 * time.Hour, Coefficient: 10}
	if d := huge.Delay(math.MaxInt32, nil); d < 12*time.Hour || d > 24*time.Hour {
		t.Errorf("Delay far past the cap = %v", d)
	}
}

func TestEqualJitter(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 1000 {
		if d := backoff.EqualJitter(10*time.Second, rnd); d < 5*time.Second || d > 10*time.Second {
			t.Fatalf("EqualJitter(10s) = %v", d)
		}
	}
}

// Spread keeps a fixed schedule's delay within frac of itself either way
// (webhook retries: 10%).
func TestSpread(t *testing.T) {
	rnd := rand.New(rand.NewPCG(5, 6))
	lo, hi := time.Duration(math.MaxInt64), time.Duration(0)
	for range 10000 {
		d := backoff.Spread(5*time.Minute, 0.1, rnd)
		if d < 270*time.Second || d > 330*time.Second {
			t.Fatalf("Spread(5m, 10%%) = %v", d)
		}
		lo, hi = min(lo, d), max(hi, d)
	}
	// It does spread: both sides of the delay are used.
	if lo > 280*time.Second || hi < 320*time.Second {
		t.Errorf("Spread(5m, 10%%) stayed within [%v, %v]", lo, hi)
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if got := backoff.Spread(d, 0.1, nil); got != d {
			t.Errorf("Spread(%v) = %v, want it unchanged", d, got)
		}
	}
}

func TestSpan(t *testing.T) {
	day := 24 * time.Hour
	for _, tc := range []struct {
		name     string
		e        backoff.Exponential
		attempts int
		want     time.Duration
	}{
		{"one attempt waits nothing", backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2}, 1, 0},
		{"no attempt", backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2}, 0, 0},
		{"step default", backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2}, 5, 15 * time.Second},
		{"capped", backoff.Exponential{Initial: time.Second, Max: 4 * time.Second, Coefficient: 2}, 6, 1*time.Second + 2*time.Second + 3*4*time.Second},
		{"8 attempts of a day", backoff.Exponential{Initial: day, Max: day, Coefficient: 1}, 8, 7 * day},
		{"overflow", backoff.Exponential{Initial: day, Max: time.Duration(math.MaxInt64 / 4), Coefficient: 10}, 100, time.Duration(math.MaxInt64)},
		{"overflow at the cap", backoff.Exponential{Initial: day, Max: day, Coefficient: 2}, math.MaxInt32 * 1000, time.Duration(math.MaxInt64)},
	} {
		if got := tc.e.Span(tc.attempts); got != tc.want {
			t.Errorf("%s: Span(%d) = %v, want %v", tc.name, tc.attempts, got, tc.want)
		}
	}
}
