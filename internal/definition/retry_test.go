package definition

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestStepRetryPolicyDefaults(t *testing.T) {
	tests := []struct {
		step Step
		want RetryPolicy
	}{
		{Step{Type: StepHTTP}, RetryPolicy{5, Duration{time.Second}, Duration{time.Minute}, 2}},
		{Step{Type: StepLLM}, RetryPolicy{5, Duration{time.Second}, Duration{time.Minute}, 2}},
		{Step{Type: StepTransform}, RetryPolicy{1, Duration{time.Second}, Duration{time.Minute}, 2}},
		{Step{Type: StepApproval}, RetryPolicy{1, Duration{time.Second}, Duration{time.Minute}, 2}},
		{Step{Type: StepDelay}, RetryPolicy{1, Duration{time.Second}, Duration{time.Minute}, 2}},
		{
			Step{Type: StepHTTP, Retry: &RetryPolicy{MaxAttempts: 3, MaxInterval: Duration{10 * time.Second}}},
			RetryPolicy{3, Duration{time.Second}, Duration{10 * time.Second}, 2},
		},
		{
			Step{Type: StepTransform, Retry: &RetryPolicy{MaxAttempts: 2, InitialInterval: Duration{5 * time.Second}, BackoffCoefficient: 1.5}},
			RetryPolicy{2, Duration{5 * time.Second}, Duration{time.Minute}, 1.5},
		},
	}
	for _, tt := range tests {
		if got := tt.step.RetryPolicy(); got != tt.want {
			t.Errorf("%s %+v: RetryPolicy = %+v, want %+v", tt.step.Type, tt.step.Retry, got, tt.want)
		}
	}
}

func TestBackoffGrowsAndIsCapped(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 20, InitialInterval: Duration{time.Second}, MaxInterval: Duration{time.Minute}, BackoffCoefficient: 2}
	rnd := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		prev := time.Duration(0)
		for attempt := 1; attempt <= 20; attempt++ {
			d := p.Backoff(attempt, rnd)
			base := time.Duration(float64(time.Second) * float64(int64(1)<<min(attempt-1, 62)))
			base = min(base, time.Minute)
			if d < base/2 || d > base {
				t.Fatalf("trial %d attempt %d: Backoff = %v, want within [%v, %v]", trial, attempt, d, base/2, base)
			}
			// Equal jitter with coefficient 2 never shrinks: the next floor
			// (base*2/2) is this ceiling, until the cap is reached.
			if base < time.Minute && d < prev {
				t.Fatalf("trial %d attempt %d: Backoff %v shrank from %v", trial, attempt, d, prev)
			}
			prev = d
		}
	}
	if d := p.Backoff(1000, nil); d > time.Minute || d < 30*time.Second {
		t.Errorf("Backoff(1000) = %v, want capped at 1m", d)
	}
	if d := p.Backoff(0, nil); d > time.Second {
		t.Errorf("Backoff(0) = %v, want treated as the first attempt", d)
	}

	// Deterministic for a given source, so tests elsewhere can pin delays.
	a := p.Backoff(3, rand.New(rand.NewPCG(7, 7)))
	b := p.Backoff(3, rand.New(rand.NewPCG(7, 7)))
	if a != b {
		t.Errorf("Backoff with identical sources differs: %v vs %v", a, b)
	}

	// Zero-valued policies still back off sensibly rather than spinning.
	if d := (RetryPolicy{}).Backoff(2, nil); d < time.Second || d > 2*time.Second {
		t.Errorf("zero policy Backoff(2) = %v", d)
	}
}
