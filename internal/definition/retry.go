package definition

import (
	"math"
	"math/rand/v2"
	"time"
)

// Retry defaults. Only http and llm steps talk to other systems and so see
// transient failures worth retrying; the other types fail deterministically
// and get one attempt unless the definition asks for more.
const (
	DefaultMaxAttempts        = 5
	DefaultInitialInterval    = time.Second
	DefaultMaxInterval        = time.Minute
	DefaultBackoffCoefficient = 2.0
)

// RetryPolicy returns the step's effective retry policy: fields the
// definition sets win, the rest come from the defaults. http and llm steps
// default to 5 attempts, 1s initial interval, 1m max interval and
// coefficient 2; transform, approval and delay steps default to 1 attempt
// (with the same intervals, used if a definition raises maxAttempts).
func (s *Step) RetryPolicy() RetryPolicy {
	p := RetryPolicy{
		MaxAttempts:        1,
		InitialInterval:    Duration{DefaultInitialInterval},
		MaxInterval:        Duration{DefaultMaxInterval},
		BackoffCoefficient: DefaultBackoffCoefficient,
	}
	if s.Type == StepHTTP || s.Type == StepLLM {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if r := s.Retry; r != nil {
		if r.MaxAttempts > 0 {
			p.MaxAttempts = r.MaxAttempts
		}
		if r.InitialInterval.Duration > 0 {
			p.InitialInterval = r.InitialInterval
		}
		if r.MaxInterval.Duration > 0 {
			p.MaxInterval = r.MaxInterval
		}
		if r.BackoffCoefficient > 0 {
			p.BackoffCoefficient = r.BackoffCoefficient
		}
	}
	return p
}

// Backoff returns how long to wait after failed attempt number attempt
// (1-based) before the next one. The exponential delay
// InitialInterval * BackoffCoefficient^(attempt-1) is capped at MaxInterval
// and then given "equal jitter": half of it is kept and the other half is
// random. Unlike full jitter this keeps a floor, so waits reliably grow while
// workers retrying the same outage still spread out. A nil rnd uses the
// global source.
func (p RetryPolicy) Backoff(attempt int, rnd *rand.Rand) time.Duration {
	initial := p.InitialInterval.Duration
	if initial <= 0 {
		initial = DefaultInitialInterval
	}
	maxInterval := p.MaxInterval.Duration
	if maxInterval <= 0 {
		maxInterval = DefaultMaxInterval
	}
	// Versions published before the bounds existed (ParseStored) may ask
	// for more: never wait longer than the bound.
	maxInterval = min(maxInterval, MaxRetryInterval)
	coefficient := p.BackoffCoefficient
	if coefficient < 1 {
		coefficient = DefaultBackoffCoefficient
	}
	if attempt < 1 {
		attempt = 1
	}

	d := float64(initial) * math.Pow(coefficient, float64(attempt-1))
	if math.IsNaN(d) || d > float64(maxInterval) {
		d = float64(maxInterval)
	}
	var r float64
	if rnd != nil {
		r = rnd.Float64()
	} else {
		r = rand.Float64()
	}
	half := d / 2
	return time.Duration(half + r*half)
}

// WorstCaseSpan is the longest the policy's schedule can wait in total
// between its first and last attempt: every backoff at its full value
// (equal jitter keeps at most the whole exponential delay), capped at
// MaxInterval. A server's Retry-After is not counted.
func (p RetryPolicy) WorstCaseSpan() time.Duration {
	initial := float64(p.InitialInterval.Duration)
	if initial <= 0 {
		initial = float64(DefaultInitialInterval)
	}
	maxInterval := float64(p.MaxInterval.Duration)
	if maxInterval <= 0 {
		maxInterval = float64(DefaultMaxInterval)
	}
	coefficient := p.BackoffCoefficient
	if coefficient < 1 {
		coefficient = DefaultBackoffCoefficient
	}
	var total float64
	d := initial
	for range max(p.MaxAttempts-1, 0) {
		total += min(d, maxInterval)
		if total > float64(math.MaxInt64)/2 {
			return time.Duration(math.MaxInt64)
		}
		d *= coefficient
	}
	return time.Duration(total)
}
