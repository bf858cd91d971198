package definition

import (
	"math/rand/v2"
	"time"

	"github.com/sluicehq/sluice/internal/backoff"
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
// (1-based) before the next one: backoff.Exponential's Delay, the
// exponential delay InitialInterval * BackoffCoefficient^(attempt-1) capped
// at MaxInterval with equal jitter (half of it kept, the other half
// random). A nil rnd uses the global source.
func (p RetryPolicy) Backoff(attempt int, rnd *rand.Rand) time.Duration {
	// Versions published before the bounds existed (ParseStored) may ask
	// for more: never wait longer than the bound.
	e := p.exponential()
	e.Max = min(e.Max, MaxRetryInterval)
	return e.Delay(attempt, rnd)
}

// exponential is the policy's backoff with unset fields at their defaults.
func (p RetryPolicy) exponential() backoff.Exponential {
	e := backoff.Exponential{Initial: p.InitialInterval.Duration, Max: p.MaxInterval.Duration, Coefficient: p.BackoffCoefficient}
	if e.Initial <= 0 {
		e.Initial = DefaultInitialInterval
	}
	if e.Max <= 0 {
		e.Max = DefaultMaxInterval
	}
	if e.Coefficient < 1 {
		e.Coefficient = DefaultBackoffCoefficient
	}
	return e
}

// WorstCaseSpan is the longest the policy's schedule can wait in total
// between its first and last attempt: every backoff at its full value
// (equal jitter keeps at most the whole exponential delay), capped at
// MaxInterval. A server's Retry-After is not counted.
func (p RetryPolicy) WorstCaseSpan() time.Duration {
	return p.exponential().Span(p.MaxAttempts)
}
