package evals

import (
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
)

func TestScorers(t *testing.T) {
	base := map[string]any{"label": "urgent", "score": 0.80, "meta": map[string]any{"id": "a", "at": "t1"}}
	cand := map[string]any{"label": "urgent", "score": 0.83, "meta": map[string]any{"id": "a", "at": "t2"}}
	for _, tc := range []struct {
		name string
		sc   Scorer
		pass bool
	}{
		{"exact differs", Scorer{Kind: ScorerExact}, false},
		{"exact same", Scorer{Kind: ScorerJSONFields, IgnorePaths: []string{"score", "meta.at"}}, true},
		{"fields not ignored", Scorer{Kind: ScorerJSONFields, IgnorePaths: []string{"meta.at"}}, false},
		{"numeric within", Scorer{Kind: ScorerNumeric, Path: "score", Tolerance: 0.05}, true},
		{"numeric outside", Scorer{Kind: ScorerNumeric, Path: "score", Tolerance: 0.01}, false},
		{"numeric relative", Scorer{Kind: ScorerNumeric, Path: "score", Tolerance: 0.05, Relative: true}, true},
		{"cel bool", Scorer{Kind: ScorerCEL, Expression: "candidate.label == baseline.label"}, true},
		{"cel int arithmetic", Scorer{Kind: ScorerCEL, Expression: "size(candidate.label) + 1 > 6"}, true},
	} {
		if got := tc.sc.score(base, cand); got.Pass != tc.pass {
			t.Errorf("%s: pass = %v, want %v (%+v)", tc.name, got.Pass, tc.pass, got)
		}
	}
	if v := verdictOf([]Score{{Pass: true, Value: 1}}); v != VerdictImproved {
		t.Errorf("positive CEL number: %s", v)
	}
	if v := verdictOf([]Score{{Pass: true, Value: 1}, {Pass: false}}); v != VerdictRegressed {
		t.Errorf("a failing scorer: %s", v)
	}
	if v := verdictOf([]Score{{Pass: true}}); v != VerdictUnchanged {
		t.Errorf("passing: %s", v)
	}
	d := diff(base, cand, "", nil)
	if len(d) != 2 || d[0]["path"] != "/meta/at" || d[1]["path"] != "/score" || d[1]["op"] != "replace" {
		t.Errorf("diff: %v", d)
	}
}

func TestSummary(t *testing.T) {
	list := []measure{
		{verdict: VerdictUnchanged, baseCost: 100, candCost: 300, baseMs: 10, candMs: 30},
		{verdict: VerdictRegressed, baseCost: 100, candCost: 300, baseMs: 20, candMs: 40},
		{verdict: VerdictInconclusive, baseCost: 100, candCost: 9999, baseMs: 20, candMs: 9999},
	}
	s := summarize(list, 1000)
	if s.Verdicts.Unchanged != 1 || s.Verdicts.Regressed != 1 || s.Verdicts.Inconclusive != 1 || s.PassRate == nil || *s.PassRate != 0.5 {
		t.Fatalf("verdicts: %+v", s)
	}
	if s.CostPerRunDeltaMicroUSD != 200 || s.ProjectedMonthlyCostDeltaMicroUSD != 200_000 || s.ProjectedMonthlyCostDeltaUSD != "0.200000" {
		t.Fatalf("cost: %+v", s)
	}
	if s.Baseline.P50DurationMs != 10 || s.Candidate.P95DurationMs != 40 || s.P95DurationDeltaMs != 20 {
		t.Fatalf("durations: %+v", s)
	}
	if *s.CostPerRunDeltaPct != 200 || *s.P95DurationDeltaPct != 100 {
		t.Fatalf("percentages: %v %v", *s.CostPerRunDeltaPct, *s.P95DurationDeltaPct)
	}
	minRate, maxReg, maxCost := 0.4, 0, 250.0
	if v := s.Violations(Policy{MinPassRate: &minRate, MaxCostIncreasePct: &maxCost}); len(v) != 0 {
		t.Fatalf("violations: %v", v)
	}
	if v := s.Violations(Policy{MaxRegressions: &maxReg}); len(v) != 1 {
		t.Fatalf("one regression allowed none: %v", v)
	}
}

func TestApplyOverrides(t *testing.T) {
	model, cred := "claude-sonnet", "anthropic"
	step := &stepFixture
	got := applyOverrides(step, []ModelOverride{{StepID: "*", Model: &model, Credential: &cred, Params: map[string]any{"maxTokens": 50.0, "temperature": 0.2}}})
	if got == step || got.Model != model || got.Credential != cred || got.MaxTokens != 50 || *got.Temperature != 0.2 || step.Model != "gpt-4o" {
		t.Fatalf("override: %+v (original %+v)", got, step)
	}
	if applyOverrides(step, []ModelOverride{{StepID: "other", Model: &model}}) != step {
		t.Fatal("an override of another step applied")
	}
}

var stepFixture = definition.Step{ID: "classify", Type: definition.StepLLM, Model: "gpt-4o", Credential: "openai", MaxTokens: 100}
