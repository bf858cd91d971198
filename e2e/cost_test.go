package e2e

import (
	"testing"
	"time"
)

// llmDefinition has two model calls (gpt-4o-mini, and gpt-4o) around a
// transform, so its cost mixes two prices.
func llmDefinition(maxCostUSD float64) map[string]any {
	def := map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "draft", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 100,
				"messages": []any{map[string]any{"role": "user", "content": "Draft a reply to {{ input.ticket }}"}}},
			map[string]any{"id": "shape", "type": "transform", "needs": []any{"draft"}, "output": map[string]any{"text": "steps.draft.output.text"}},
			map[string]any{"id": "review", "type": "llm", "credential": "openai", "model": "gpt-4o", "maxTokens": 100, "needs": []any{"shape"},
				"messages": []any{map[string]any{"role": "user", "content": "Review: {{ steps.shape.output.text }}"}}},
			map[string]any{"id": "mark", "type": "transform", "needs": []any{"review"}, "output": "'done'"},
			map[string]any{"id": "final", "type": "transform", "needs": []any{"mark"}, "output": "steps.review.output.text"},
		},
		"output": "steps.final.output",
	}
	if maxCostUSD > 0 {
		def["maxCostUSD"] = maxCostUSD
	}
	return def
}

const qCost = `query($id: ID!) { node(id: $id) { ... on Run { status costMicroUSD costUSD error { class message }
	steps { stepID costMicroUSD attemptList { calls { kind provider model inputTokens outputTokens } } }
	events { type stepID } } } }`

func TestRunCostAndReport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "cost")
	ai := newFakeOpenAI(t, "Thanks for reaching out")
	ai.PromptTokens, ai.OutputTokens = 1234, 567
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf, _ := deployWorkflow(t, f, "priced", llmDefinition(0))

	var runIDs []string
	for i := range 2 {
		id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"ticket": "T-" + string(rune('1'+i))}}), "startRun.id")
		waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed")
		runIDs = append(runIDs, id)
	}
	// Shipped prices in micro-USD per million tokens: gpt-4o-mini 150,000 in
	// / 600,000 out; gpt-4o 2,500,000 in / 10,000,000 out.
	round := func(sum int64) int64 { return (sum + 500_000) / 1_000_000 }
	mini := round(1234*150_000 + 567*600_000)
	big := round(1234*2_500_000 + 567*10_000_000)
	want := mini + big
	var total int64
	for _, id := range runIDs {
		run := get(f.owner.ok(qCost, map[string]any{"id": id}), "node")
		if str(run, "status") != "succeeded" {
			t.Fatalf("run: %v", run)
		}
		if got := int64(get(run, "costMicroUSD").(float64)); got != want {
			t.Fatalf("run cost %d, want %d (= %d + %d)", got, want, mini, big)
		}
		if got := int64(get(stepOf(run.(map[string]any), "draft"), "costMicroUSD").(float64)); got != mini {
			t.Fatalf("draft step cost %d, want %d", got, mini)
		}
		total += want
	}
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	rep := f.owner.ok(`query($f: Time!, $t: Time!) { costReport(from: $f, to: $t, groupBy: [WORKFLOW, MODEL]) { workflowID provider model calls inputTokens outputTokens costMicroUSD unpricedCalls } }`, map[string]any{"f": from, "t": to})
	rows, _ := rep["costReport"].([]any)
	if len(rows) != 2 {
		t.Fatalf("report rows: %v", rows)
	}
	var sum int64
	for _, r := range rows {
		if str(r, "workflowID") != wf || get(r, "calls") != float64(2) || get(r, "unpricedCalls") != float64(0) {
			t.Fatalf("row: %v", r)
		}
		c := int64(get(r, "costMicroUSD").(float64))
		switch str(r, "model") {
		case "gpt-4o-mini":
			if c != 2*mini {
				t.Fatalf("gpt-4o-mini cost %d, want %d", c, 2*mini)
			}
		case "gpt-4o":
			if c != 2*big {
				t.Fatalf("gpt-4o cost %d, want %d", c, 2*big)
			}
		}
		sum += c
	}
	if sum != total {
		t.Fatalf("report total %d, runs total %d", sum, total)
	}
	// An override changes future calls only, and unknown models cost zero but are flagged.
	f.owner.ok(`mutation { setModelPrice(input: {provider: "openai", model: "gpt-4o-mini", inputUSDPerMTok: 1, outputUSDPerMTok: 2}) { id inputMicroUSDPerMTok } }`, nil)
	prices := f.owner.ok(`{ effectiveModelPrices { provider model inputMicroUSDPerMTok source asOf } }`, nil)
	found := false
	for _, p := range prices["effectiveModelPrices"].([]any) {
		if str(p, "model") == "gpt-4o-mini" {
			found = str(p, "source") == "OVERRIDE" && get(p, "inputMicroUSDPerMTok") == float64(1_000_000) && str(p, "asOf") != ""
		}
	}
	if !found {
		t.Fatalf("override not effective: %v", prices)
	}
	f.owner.fail("VALIDATION", `mutation { setModelPrice(input: {provider: "openai", model: "x", inputUSDPerMTok: -1, outputUSDPerMTok: 2}) { id } }`, nil)
}

func TestBudgets(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "budget")
	ai := newFakeOpenAI(t, "ok")
	ai.PromptTokens, ai.OutputTokens = 1000, 1000
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})

	// gpt-4o-mini costs 750 micro-USD per call here; gpt-4o's estimate
	// (100 output tokens at 10 USD/MTok plus the prompt) takes the run over 0.0015 USD.
	wf, _ := deployWorkflow(t, f, "capped", llmDefinition(0.0015))
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"ticket": "T"}}), "startRun.id")
	run := waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed")
	if run["status"] != "failed" || str(run, "error.class") != "budget" || str(run, "error.stepID") != "review" {
		t.Fatalf("run over maxCostUSD: %v", run)
	}
	if n := len(ai.Calls()); n != 1 {
		t.Fatalf("model calls = %d, want 1 (the second must not be made)", n)
	}
	hasBudgetEvent := false
	for _, typ := range eventTypes(run) {
		hasBudgetEvent = hasBudgetEvent || typ == "budget.exceeded"
	}
	if !hasBudgetEvent {
		t.Fatalf("no budget.exceeded event: %v", eventTypes(run))
	}

	// A tenant over its monthly budget cannot start model calls.
	f.owner.ok(`mutation { setTenantBudget(input: {monthlyUSD: 0.0001}) { monthlyBudgetMicroUSD } }`, nil)
	wf2, _ := deployWorkflow(t, f, "uncapped", llmDefinition(0))
	id2 := str(f.owner.ok(mStartRun, map[string]any{"w": wf2, "e": f.envID, "i": map[string]any{"ticket": "T"}}), "startRun.id")
	run2 := waitRun(t, f.owner, id2, 30*time.Second, "succeeded", "failed")
	if run2["status"] != "failed" || str(run2, "error.class") != "budget" || str(run2, "error.stepID") != "draft" {
		t.Fatalf("run over the tenant budget: %v", run2)
	}
	if n := len(ai.Calls()); n != 1 {
		t.Fatalf("model calls = %d after the tenant budget, want still 1", n)
	}
	f.owner.fail("VALIDATION", `mutation { setTenantBudget(input: {monthlyUSD: -5}) { id } }`, nil)
	viewerTok := newClient(t, 1, token(t, f.tenantID, "viewer"))
	viewerTok.fail("FORBIDDEN", `mutation { setTenantBudget(input: {monthlyUSD: 5}) { id } }`, nil)
}
