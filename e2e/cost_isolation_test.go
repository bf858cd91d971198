package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestCostIsolation checks that model calls, prices and cost reports of one
// tenant are invisible to another, and that its overrides cannot be touched.
func TestCostIsolation(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "cost-a")
	b := newFixture(t, "cost-b")
	ai := newFakeOpenAI(t, "ok")
	a.owner.ok(mCreateCred, map[string]any{"e": a.envID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf, _ := deployWorkflow(t, a, "priced", llmDefinition(0))
	id := str(a.owner.ok(mStartRun, map[string]any{"w": wf, "e": a.envID, "i": map[string]any{"ticket": "T"}}), "startRun.id")
	waitRun(t, a.owner, id, 30*time.Second, "succeeded")
	price := str(a.owner.ok(`mutation { setModelPrice(input: {provider: "openai", model: "gpt-4o", inputUSDPerMTok: 1, outputUSDPerMTok: 2}) { id } }`, nil), "setModelPrice.id")
	calls := edges(a.owner.ok(`{ modelCalls { edges { node { id model } } } }`, nil), "modelCalls")
	if len(calls) != 2 {
		t.Fatalf("tenant A sees %d model calls, want 2", len(calls))
	}
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	report := `query($f: Time!, $t: Time!) { costReport(from: $f, to: $t, groupBy: [MODEL]) { model calls costMicroUSD } }`
	if rows := a.owner.ok(report, map[string]any{"f": from, "t": to})["costReport"].([]any); len(rows) != 2 {
		t.Fatalf("tenant A report rows: %v", rows)
	}

	if rows := b.owner.ok(report, map[string]any{"f": from, "t": to})["costReport"].([]any); len(rows) != 0 {
		t.Fatalf("tenant B's report shows tenant A's calls: %v", rows)
	}
	if got := edges(b.owner.ok(`{ modelCalls { edges { node { id } } } modelPrices { edges { node { id } } } }`, nil), "modelCalls"); len(got) != 0 {
		t.Fatalf("tenant B sees model calls %v", got)
	}
	if got := edges(b.owner.ok(`{ modelPrices { edges { node { id } } } }`, nil), "modelPrices"); len(got) != 0 {
		t.Fatalf("tenant B sees model prices %v", got)
	}
	for _, other := range []string{calls[0]["id"].(string), price} {
		if n := get(b.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": other}), "node"); n != nil {
			t.Fatalf("tenant B reads %s: %v", other, n)
		}
	}
	for _, p := range b.owner.ok(`{ effectiveModelPrices { model source } }`, nil)["effectiveModelPrices"].([]any) {
		if str(p, "source") == "OVERRIDE" {
			t.Fatalf("tenant A's override shows in tenant B's prices: %v", p)
		}
	}
	r := b.owner.fail("NOT_FOUND", `mutation($id: ID!) { deleteModelPrice(id: $id) }`, map[string]any{"id": price})
	made := b.owner.fail("NOT_FOUND", `mutation($id: ID!) { deleteModelPrice(id: $id) }`, map[string]any{"id": "mp_01jzzzzzzzzzzzzzzzzzzzzzzz"})
	if strings.ReplaceAll(r.Raw, price, "X") != strings.ReplaceAll(made.Raw, "mp_01jzzzzzzzzzzzzzzzzzzzzzzz", "X") {
		t.Fatalf("another tenant's price and a made-up id answer differently:\n%s\n%s", r.Raw, made.Raw)
	}
	if got := edges(a.owner.ok(`{ modelPrices { edges { node { id } } } }`, nil), "modelPrices"); len(got) != 1 {
		t.Fatalf("tenant A's override was removed by tenant B: %v", got)
	}
}
