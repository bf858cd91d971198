package llm

import "testing"

func TestShippedTableAndCost(t *testing.T) {
	tab := Shipped()
	if tab.AsOf == "" {
		t.Fatal("shipped prices carry no date")
	}
	p, ok := tab.Lookup("openai", "gpt-4o-mini")
	if !ok || p.Input != 150_000 || p.Output != 600_000 {
		t.Fatalf("gpt-4o-mini price: %+v %v", p, ok)
	}
	if q, ok := tab.Lookup("openai", "gpt-4o-mini-2024-07-18"); !ok || q != p {
		t.Fatalf("dated snapshot not priced as its base: %+v %v", q, ok)
	}
	if _, ok := tab.Lookup("openai", "unknown-model"); ok {
		t.Fatal("unknown model priced")
	}
	// 1,000 input (200 cached) and 500 output tokens of gpt-4o-mini:
	// 800*0.15 + 200*0.075 + 500*0.60 = 120 + 15 + 300 = 435 micro-USD.
	if got := Cost(p, Usage{Input: 1000, CachedInput: 200, Output: 500}); got != 435 {
		t.Fatalf("cost = %d, want 435", got)
	}
	over := tab.With([]Price{{Provider: "openai", Model: "gpt-4o-mini", Input: 1_000_000, Output: 2_000_000}})
	if q, _ := over.Lookup("openai", "gpt-4o-mini"); q.Input != 1_000_000 {
		t.Fatalf("override not applied: %+v", q)
	}
	if q, _ := tab.Lookup("openai", "gpt-4o-mini"); q.Input != 150_000 {
		t.Fatal("override leaked into the shipped table")
	}
}
