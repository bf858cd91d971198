// Package backoff owns how long to wait before trying again: the one
// implementation of exponential backoff (step retries, waiting for a
// dependency at start, reconnecting to Redis) and the jitter helpers, also
// applied to the fixed webhook retry schedule.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Exponential is a backoff that starts at Initial and grows by Coefficient
// after each failure, capped at Max. All three must be set: Max positive,
// Coefficient at least 1 (callers resolve their defaults).
type Exponential struct {
	Initial     time.Duration
	Max         time.Duration
	Coefficient float64
}

// Ceiling is the wait after failed attempt number attempt (1-based; below 1
// counts as 1) before any jitter: Initial * Coefficient^(attempt-1), capped
// at Max.
func (e Exponential) Ceiling(attempt int) time.Duration {
	return time.Duration(e.ceiling(attempt))
}

// Delay is Ceiling with equal jitter (EqualJitter). A nil rnd uses the
// global source.
func (e Exponential) Delay(attempt int, rnd *rand.Rand) time.Duration {
	return equalJitter(e.ceiling(attempt), unit(rnd))
}

// Span is the longest the first attempts attempts can wait in total: the
// sum of Ceiling over the waits between them (attempts-1 of them), or the
// largest Duration when that overflows.
func (e Exponential) Span(attempts int) time.Duration {
	const limit = float64(math.MaxInt64) / 2
	var total float64
	for attempt := 1; attempt < attempts; attempt++ {
		d := e.ceiling(attempt)
		if d >= float64(e.Max) {
			// Every later wait is the cap too.
			total += d * float64(attempts-attempt)
			break
		}
		total += d
		if total > limit {
			break
		}
	}
	if total > limit {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(total)
}

func (e Exponential) ceiling(attempt int) float64 {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(e.Initial) * math.Pow(e.Coefficient, float64(attempt-1))
	if math.IsNaN(d) || d > float64(e.Max) {
		d = float64(e.Max)
	}
	return d
}

// EqualJitter keeps half of d and makes the other half random: a wait in
// [d/2, d]. Unlike full jitter it keeps a floor, so waits reliably grow
// while clients retrying the same outage still spread out. A nil rnd uses
// the global source.
func EqualJitter(d time.Duration, rnd *rand.Rand) time.Duration {
	return equalJitter(float64(d), unit(rnd))
}

func equalJitter(d, r float64) time.Duration {
	half := d / 2
	return time.Duration(half + r*half)
}

// Spread moves d by up to frac of itself either way: a wait in
// [d - frac*d, d + frac*d], for a fixed schedule whose clients should not
// all come back at once. d <= 0 is returned as is. A nil rnd uses the
// global source.
func Spread(d time.Duration, frac float64, rnd *rand.Rand) time.Duration {
	if d <= 0 {
		return d
	}
	return d + time.Duration((unit(rnd)*2*frac-frac)*float64(d))
}

// unit is a random number in [0, 1) from rnd, or from the global source.
func unit(rnd *rand.Rand) float64 {
	if rnd != nil {
		return rnd.Float64()
	}
	return rand.Float64()
}
