package evals

import (
	"fmt"
	"slices"

	"github.com/sluicehq/sluice/internal/money"
)

// VerdictCounts counts an evaluation's examples per verdict.
type VerdictCounts struct {
	Improved     int `json:"improved"`
	Regressed    int `json:"regressed"`
	Unchanged    int `json:"unchanged"`
	Error        int `json:"error"`
	Inconclusive int `json:"inconclusive"`
}

// Side is one side's (baseline or candidate) measures over the examples
// with a verdict other than inconclusive.
type Side struct {
	Runs               int    `json:"runs"`
	CostPerRunMicroUSD int64  `json:"costPerRunMicroUSD"`
	CostPerRunUSD      string `json:"costPerRunUSD"`
	TokensPerRun       int64  `json:"tokensPerRun"`
	P50DurationMs      int64  `json:"p50DurationMs"`
	P95DurationMs      int64  `json:"p95DurationMs"`
}

// Summary is an evaluation's summary, stored as JSON on the evaluation and
// recomputed from its examples as they finish.
type Summary struct {
	Verdicts                VerdictCounts `json:"verdicts"`
	PassRate                *float64      `json:"passRate"`
	Baseline                Side          `json:"baseline"`
	Candidate               Side          `json:"candidate"`
	CostPerRunDeltaMicroUSD int64         `json:"costPerRunDeltaMicroUSD"`
	P50DurationDeltaMs      int64         `json:"p50DurationDeltaMs"`
	P95DurationDeltaMs      int64         `json:"p95DurationDeltaMs"`
	// CostPerRunDeltaPct and P95DurationDeltaPct are the deltas relative
	// to the baseline, in percent; nil when the baseline's is zero.
	CostPerRunDeltaPct                *float64 `json:"costPerRunDeltaPct"`
	P95DurationDeltaPct               *float64 `json:"p95DurationDeltaPct"`
	MonthlyRuns                       int64    `json:"monthlyRuns"`
	ProjectedMonthlyCostDeltaMicroUSD int64    `json:"projectedMonthlyCostDeltaMicroUSD"`
	ProjectedMonthlyCostDeltaUSD      string   `json:"projectedMonthlyCostDeltaUSD"`
}

// ModelOverride replaces an llm step's credential, model and parameters in
// the candidate ("*" for every llm step).
type ModelOverride struct {
	StepID     string         `json:"stepID"`
	Credential *string        `json:"credential,omitempty"`
	Model      *string        `json:"model,omitempty"`
	Params     map[string]any `json:"params,omitempty"`
}

// measure is one finished example as the summary reads it.
type measure struct {
	verdict                string
	baseCost, candCost     int64
	baseTokens, candTokens int64
	baseMs, candMs         int64
}

func summarize(list []measure, monthlyRuns int64) Summary {
	var s Summary
	var baseMs, candMs []int64
	var baseCost, candCost, baseTok, candTok int64
	for _, m := range list {
		switch m.verdict {
		case VerdictImproved:
			s.Verdicts.Improved++
		case VerdictRegressed:
			s.Verdicts.Regressed++
		case VerdictUnchanged:
			s.Verdicts.Unchanged++
		case VerdictError:
			s.Verdicts.Error++
		case VerdictInconclusive:
			s.Verdicts.Inconclusive++
			continue
		}
		baseMs, candMs = append(baseMs, m.baseMs), append(candMs, m.candMs)
		baseCost, candCost = baseCost+m.baseCost, candCost+m.candCost
		baseTok, candTok = baseTok+m.baseTokens, candTok+m.candTokens
	}
	judged := s.Verdicts.Improved + s.Verdicts.Unchanged + s.Verdicts.Regressed + s.Verdicts.Error
	if judged > 0 {
		r := float64(s.Verdicts.Improved+s.Verdicts.Unchanged) / float64(judged)
		s.PassRate = &r
	}
	s.Baseline = side(len(baseMs), baseCost, baseTok, baseMs)
	s.Candidate = side(len(candMs), candCost, candTok, candMs)
	s.CostPerRunDeltaMicroUSD = s.Candidate.CostPerRunMicroUSD - s.Baseline.CostPerRunMicroUSD
	s.P50DurationDeltaMs = s.Candidate.P50DurationMs - s.Baseline.P50DurationMs
	s.P95DurationDeltaMs = s.Candidate.P95DurationMs - s.Baseline.P95DurationMs
	s.CostPerRunDeltaPct = pct(s.CostPerRunDeltaMicroUSD, s.Baseline.CostPerRunMicroUSD)
	s.P95DurationDeltaPct = pct(s.P95DurationDeltaMs, s.Baseline.P95DurationMs)
	s.MonthlyRuns = monthlyRuns
	s.ProjectedMonthlyCostDeltaMicroUSD = monthlyRuns * s.CostPerRunDeltaMicroUSD
	s.ProjectedMonthlyCostDeltaUSD = money.FormatUSD(s.ProjectedMonthlyCostDeltaMicroUSD)
	return s
}

func side(n int, cost, tokens int64, ms []int64) Side {
	sd := Side{Runs: n, CostPerRunUSD: money.FormatUSD(0)}
	if n == 0 {
		return sd
	}
	sd.CostPerRunMicroUSD = cost / int64(n)
	sd.CostPerRunUSD = money.FormatUSD(sd.CostPerRunMicroUSD)
	sd.TokensPerRun = tokens / int64(n)
	slices.Sort(ms)
	sd.P50DurationMs, sd.P95DurationMs = percentile(ms, 50), percentile(ms, 95)
	return sd
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []int64, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func pct(delta, base int64) *float64 {
	if base == 0 {
		return nil
	}
	p := 100 * float64(delta) / float64(base)
	return &p
}

// Policy is what an evaluation must show to pass a gate (protected
// environments and releases build on it): each limit is checked when set.
type Policy struct {
	MinPassRate        *float64 // 0..1
	MaxRegressions     *int
	MaxCostIncreasePct *float64
	MaxP95IncreasePct  *float64
}

// Violations lists, in words, the limits of p the summary breaks; none
// means it passes. A pass rate that cannot be computed (no example judged)
// breaks a MinPassRate.
func (s Summary) Violations(p Policy) []string {
	var out []string
	if p.MinPassRate != nil && (s.PassRate == nil || *s.PassRate < *p.MinPassRate) {
		out = append(out, fmt.Sprintf("pass rate %s is below %.4g", rate(s.PassRate), *p.MinPassRate))
	}
	if p.MaxRegressions != nil && s.Verdicts.Regressed > *p.MaxRegressions {
		out = append(out, fmt.Sprintf("%d regressions, more than %d", s.Verdicts.Regressed, *p.MaxRegressions))
	}
	if p.MaxCostIncreasePct != nil && s.CostPerRunDeltaPct != nil && *s.CostPerRunDeltaPct > *p.MaxCostIncreasePct {
		out = append(out, fmt.Sprintf("cost per run up %.1f%%, more than %.4g%%", *s.CostPerRunDeltaPct, *p.MaxCostIncreasePct))
	}
	if p.MaxP95IncreasePct != nil && s.P95DurationDeltaPct != nil && *s.P95DurationDeltaPct > *p.MaxP95IncreasePct {
		out = append(out, fmt.Sprintf("p95 duration up %.1f%%, more than %.4g%%", *s.P95DurationDeltaPct, *p.MaxP95IncreasePct))
	}
	return out
}

func rate(r *float64) string {
	if r == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.4g", *r)
}
