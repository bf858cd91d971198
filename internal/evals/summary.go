package evals

import (
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
	Verdicts                          VerdictCounts `json:"verdicts"`
	PassRate                          *float64      `json:"passRate"`
	Baseline                          Side          `json:"baseline"`
	Candidate                         Side          `json:"candidate"`
	CostPerRunDeltaMicroUSD           int64         `json:"costPerRunDeltaMicroUSD"`
	P50DurationDeltaMs                int64         `json:"p50DurationDeltaMs"`
	P95DurationDeltaMs                int64         `json:"p95DurationDeltaMs"`
	MonthlyRuns                       int64         `json:"monthlyRuns"`
	ProjectedMonthlyCostDeltaMicroUSD int64         `json:"projectedMonthlyCostDeltaMicroUSD"`
	ProjectedMonthlyCostDeltaUSD      string        `json:"projectedMonthlyCostDeltaUSD"`
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
