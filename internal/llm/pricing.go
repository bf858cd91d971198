// Package llm prices model calls: the shipped price table (prices.json, with
// the date it was taken), tenant overrides, and the cost arithmetic. All
// amounts are integer micro-USD.
package llm

import (
	_ "embed"
	"encoding/json"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/internal/money"
)

//go:embed prices.json
var pricesJSON []byte

// Price is a model's price in micro-USD per million tokens.
type Price struct {
	Provider    string
	Model       string
	Input       int64
	CachedInput int64
	Output      int64
}

// Table is a set of prices looked up by provider and model.
type Table struct {
	AsOf   string
	prices map[string]Price // provider + "/" + model
}

type shippedFile struct {
	AsOf   string `json:"asOf"`
	Models []struct {
		Provider    string  `json:"provider"`
		Model       string  `json:"model"`
		Input       float64 `json:"input"`
		CachedInput float64 `json:"cachedInput"`
		Output      float64 `json:"output"`
	} `json:"models"`
}

// Shipped returns the price table shipped with Sluice.
func Shipped() *Table {
	var f shippedFile
	if err := json.Unmarshal(pricesJSON, &f); err != nil {
		panic("llm: prices.json: " + err.Error())
	}
	t := &Table{AsOf: f.AsOf, prices: map[string]Price{}}
	for _, m := range f.Models {
		t.Set(Price{Provider: m.Provider, Model: m.Model, Input: money.FromUSD(m.Input), CachedInput: money.FromUSD(m.CachedInput), Output: money.FromUSD(m.Output)})
	}
	return t
}

// Set adds or replaces a price.
func (t *Table) Set(p Price) { t.prices[p.Provider+"/"+p.Model] = p }

// With returns a copy of t with overrides applied.
func (t *Table) With(overrides []Price) *Table {
	c := &Table{AsOf: t.AsOf, prices: make(map[string]Price, len(t.prices)+len(overrides))}
	for k, v := range t.prices {
		c.prices[k] = v
	}
	for _, p := range overrides {
		c.Set(p)
	}
	return c
}

// All returns every price, sorted by provider and model.
func (t *Table) All() []Price {
	out := make([]Price, 0, len(t.prices))
	for _, p := range t.prices {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Provider != out[j].Provider {
			return out[i].Provider < out[j].Provider
		}
		return out[i].Model < out[j].Model
	})
	return out
}

// Lookup finds a model's price: the exact name, else the longest priced name
// the model starts with followed by '-' (dated snapshots such as
// gpt-4o-mini-2024-07-18 use gpt-4o-mini's price).
func (t *Table) Lookup(provider, model string) (Price, bool) {
	if p, ok := t.prices[provider+"/"+model]; ok {
		return p, true
	}
	var best Price
	found := false
	for _, p := range t.prices {
		if p.Provider == provider && strings.HasPrefix(model, p.Model+"-") && len(p.Model) > len(best.Model) {
			best, found = p, true
		}
	}
	return best, found
}

// Usage is the token counts of one call. CachedInput is part of Input.
type Usage struct {
	Input, CachedInput, Output int64
}

// Cost returns the cost of usage at price p in micro-USD, rounded to the
// nearest micro-USD once per call.
func Cost(p Price, u Usage) int64 {
	cached := min(u.CachedInput, u.Input)
	sum := (u.Input-cached)*p.Input + cached*p.CachedInput + u.Output*p.Output
	return (sum + 500_000) / 1_000_000
}
