package triggers

import (
	"time"

	"github.com/sluicehq/sluice/ent"
)

// The rate limit is GCRA over the trigger row (rate_tat, its theoretical
// arrival time), updated under the row lock of the delivery's transaction:
// it holds across any number of API processes, and survives restarts.

func interval(t *ent.Trigger) time.Duration {
	return time.Duration(float64(time.Second) / t.RateLimit.Rate())
}

// allow reports whether a request at now fits, and if not how long to wait.
func allow(t *ent.Trigger, now time.Time) (time.Duration, bool) {
	tat := now
	if t.RateTat != nil && t.RateTat.After(now) {
		tat = *t.RateTat
	}
	iv := interval(t)
	// Up to burst requests may be ahead of the sustained rate.
	allowance := time.Duration(t.RateLimit.BurstOrDefault()-1) * iv
	if ahead := tat.Sub(now); ahead > allowance {
		return ahead - allowance, false
	}
	return 0, true
}

func nextTAT(t *ent.Trigger, now time.Time) time.Time {
	tat := now
	if t.RateTat != nil && t.RateTat.After(now) {
		tat = *t.RateTat
	}
	return tat.Add(interval(t))
}
