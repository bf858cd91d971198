package bench

import (
	"slices"
	"time"
)

// Sample is a set of measured durations.
type Sample []time.Duration

// Percentile returns the q-quantile (0..1) by nearest rank, or 0 when the
// sample is empty.
func (s Sample) Percentile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Median is Percentile(0.5).
func (s Sample) Median() time.Duration { return s.Percentile(0.5) }

// ms converts a duration to fractional milliseconds, the unit every latency
// is printed in.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// steadyRate is the completion rate over the middle of a batch: the 20th to
// the 80th percentile of completion times. Ramp-up (every slot starting at
// once) and ramp-down (the last runs finishing with fewer in flight) are left
// out, so the figure is the sustained rate.
func steadyRate(finished []time.Time) float64 {
	if len(finished) < 2 {
		return 0
	}
	sorted := slices.Clone(finished)
	slices.SortFunc(sorted, func(a, b time.Time) int { return a.Compare(b) })
	lo, hi := len(sorted)/5, len(sorted)*4/5
	if hi-lo < 1 || !sorted[hi-1].After(sorted[lo]) {
		lo, hi = 0, len(sorted)
	}
	span := sorted[hi-1].Sub(sorted[lo])
	if span <= 0 {
		return 0
	}
	return float64(hi-1-lo) / span.Seconds()
}
