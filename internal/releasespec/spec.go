// Package releasespec is the leaf shared by the release schema (ent), the
// run state machine (routing a new run) and internal/releases (the
// control of releases and their analysis): a release's steps and analysis
// policy, the figures one analysis records, and the routing hash.
package releasespec

import (
	"fmt"
	"math"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Buckets is the number of routing buckets: a weight of w percent sends
// buckets below w*100 to the candidate.
const Buckets = 10000

// Step is one step of a release: the candidate's share of new runs, how
// long it holds at least, and how many candidate runs must have finished
// in it before the next step.
type Step struct {
	WeightPercent int    `json:"weightPercent"`
	HoldFor       string `json:"holdFor,omitempty"` // a Go duration ("10m"); empty: no minimum
	MinRuns       int    `json:"minRuns,omitempty"`
}

// Hold is the step's holdFor (0 when empty or invalid; validated at create).
func (s Step) Hold() time.Duration {
	d, _ := time.ParseDuration(s.HoldFor)
	return d
}

// Analysis is how a release compares its candidate with its stable side.
type Analysis struct {
	// MinRunsPerSide: below this many finished runs on either side in the
	// step's window, the analysis is inconclusive and the step holds.
	MinRunsPerSide int `json:"minRunsPerSide"`
	// MaxSuccessRateDrop: the candidate breaches when the upper Wilson
	// bound (95%) of its success rate is below the stable side's lower
	// Wilson bound minus this (a fraction, 0..1).
	MaxSuccessRateDrop float64 `json:"maxSuccessRateDrop"`
	// MaxP95IncreasePct and MaxCostIncreasePct, when set, breach when the
	// candidate's p95 duration (or cost per run) exceeds the stable side's
	// by more than this percentage.
	MaxP95IncreasePct  *float64 `json:"maxP95IncreasePct,omitempty"`
	MaxCostIncreasePct *float64 `json:"maxCostIncreasePct,omitempty"`
}

// Defaults of an analysis policy.
const (
	DefaultMinRunsPerSide     = 10
	DefaultMaxSuccessRateDrop = 0.0
)

// WithDefaults fills unset fields.
func (a Analysis) WithDefaults() Analysis {
	if a.MinRunsPerSide <= 0 {
		a.MinRunsPerSide = DefaultMinRunsPerSide
	}
	return a
}

// Side is the measurement of one side over an analysis window.
type Side struct {
	Runs             int     `json:"runs"`      // finished runs counted (permanent failures excluded)
	Succeeded        int     `json:"succeeded"` // of which succeeded
	Excluded         int     `json:"excluded"`  // failed with class permanent (not counted)
	SuccessRate      float64 `json:"successRate"`
	SuccessRateLower float64 `json:"successRateLower"` // Wilson 95% bounds
	SuccessRateUpper float64 `json:"successRateUpper"`
	P95DurationMs    float64 `json:"p95DurationMs"`
	CostPerRun       float64 `json:"costPerRunMicroUSD"`
}

// Verdict of one analysis.
type Verdict string

const (
	// Inconclusive: too little data; the step holds.
	Inconclusive Verdict = "INCONCLUSIVE"
	// Healthy: no breach; the step advances once held long enough.
	Healthy Verdict = "HEALTHY"
	// Breach: the candidate is worse; the release rolls back.
	Breach Verdict = "BREACH"
)

// Figures is what one analysis recorded.
type Figures struct {
	At            time.Time `json:"at"`
	Step          int       `json:"step"`
	WeightPercent int       `json:"weightPercent"`
	Since         time.Time `json:"since"`
	Stable        Side      `json:"stable"`
	Candidate     Side      `json:"candidate"`
	Verdict       string    `json:"verdict"` // a Verdict
	Reasons       []string  `json:"reasons,omitempty"`
}

// Bucket is the routing bucket of a key in a release: a stable hash of
// (release id, key) mod Buckets.
func Bucket(releaseID, key string) int {
	h := xxhash.New()
	_, _ = h.WriteString(releaseID)
	_, _ = h.Write([]byte{0})
	_, _ = h.WriteString(key)
	return int(h.Sum64() % Buckets)
}

// Candidate reports whether a key goes to the candidate at weight percent.
func Candidate(releaseID, key string, weightPercent int) bool {
	return Bucket(releaseID, key) < weightPercent*(Buckets/100)
}

// Wilson returns the 95% Wilson score interval of succeeded out of n.
func Wilson(succeeded, n int) (lower, upper float64) {
	if n == 0 {
		return 0, 1
	}
	const z = 1.959963984540054
	p := float64(succeeded) / float64(n)
	nf := float64(n)
	den := 1 + z*z/nf
	centre := p + z*z/(2*nf)
	margin := z * math.Sqrt(p*(1-p)/nf+z*z/(4*nf*nf))
	return max(0, (centre-margin)/den), min(1, (centre+margin)/den)
}

// Judge decides an analysis from both sides' figures.
func Judge(a Analysis, stable, candidate Side) (Verdict, []string) {
	a = a.WithDefaults()
	if stable.Runs < a.MinRunsPerSide || candidate.Runs < a.MinRunsPerSide {
		return Inconclusive, []string{fmt.Sprintf("fewer than %d finished runs on a side (stable %d, candidate %d)", a.MinRunsPerSide, stable.Runs, candidate.Runs)}
	}
	var reasons []string
	if candidate.SuccessRateUpper < stable.SuccessRateLower-a.MaxSuccessRateDrop {
		reasons = append(reasons, fmt.Sprintf("success rate: candidate %.3f (upper bound %.3f) below stable %.3f (lower bound %.3f)", candidate.SuccessRate, candidate.SuccessRateUpper, stable.SuccessRate, stable.SuccessRateLower))
	}
	if m := a.MaxP95IncreasePct; m != nil && stable.P95DurationMs > 0 && candidate.P95DurationMs > stable.P95DurationMs*(1+*m/100) {
		reasons = append(reasons, fmt.Sprintf("p95 duration: candidate %.0fms over stable %.0fms by more than %g%%", candidate.P95DurationMs, stable.P95DurationMs, *m))
	}
	if m := a.MaxCostIncreasePct; m != nil && candidate.CostPerRun > stable.CostPerRun*(1+*m/100) {
		reasons = append(reasons, fmt.Sprintf("cost per run: candidate %.0f micro-USD over stable %.0f by more than %g%%", candidate.CostPerRun, stable.CostPerRun, *m))
	}
	if len(reasons) > 0 {
		return Breach, reasons
	}
	return Healthy, nil
}
