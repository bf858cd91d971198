package webhook

import (
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/backoff"
	"github.com/sluicehq/sluice/internal/retryafter"
)

// Schedule is the Standard Webhooks retry schedule: the delay before each
// attempt after the first failure. Attempt 1 is immediate.
var Schedule = []time.Duration{
	0,
	5 * time.Second,
	5 * time.Minute,
	30 * time.Minute,
	2 * time.Hour,
	5 * time.Hour,
	10 * time.Hour,
	14 * time.Hour,
	20 * time.Hour,
	24 * time.Hour,
}

// MaxAttempts is how many attempts a delivery gets before it is exhausted.
var MaxAttempts = len(Schedule)

// DisableAfter is how long an endpoint may fail continuously before it is
// disabled.
const DisableAfter = 5 * 24 * time.Hour

// scheduleJitter is how far either way a scheduled delay may move.
const scheduleJitter = 0.1

// NextDelay returns the delay before attempt n+1 after attempt n failed
// (n counts from 1), scaled by scale (1 in production; tests shrink it) with
// up to 10% jitter either way, and never shorter than a Retry-After. The
// bool is false when the delivery is exhausted.
func NextDelay(n int, scale float64, retryAfter time.Duration) (time.Duration, bool) {
	if n >= len(Schedule) {
		return 0, false
	}
	d := backoff.Spread(time.Duration(float64(Schedule[n])*scale), scheduleJitter, nil)
	if retryAfter > d {
		d = retryAfter
	}
	return d, true
}

// Outcome is what a response means for a delivery.
type Outcome int

const (
	// Delivered: a 2xx.
	Delivered Outcome = iota
	// Retry: any other status, or no response.
	Retry
	// Gone: 410; the endpoint is disabled.
	Gone
)

// Classify reads a response status (0 for a network error or timeout).
// Redirects are failures: they are never followed.
func Classify(status int) Outcome {
	switch {
	case status >= 200 && status < 300:
		return Delivered
	case status == http.StatusGone:
		return Gone
	default:
		return Retry
	}
}

// RetryAfter is the wait a response asks for (retryafter's rule: seconds
// or an HTTP date, at most a day); it is honoured for 429 and 5xx only.
func RetryAfter(status int, h http.Header, now time.Time) time.Duration {
	if status != http.StatusTooManyRequests && status < 500 {
		return 0
	}
	return retryafter.FromHeader(h, now)
}
