package definition

import (
	"errors"
	"strings"
	"testing"
)

func mapDef(mapStep string) []byte {
	return []byte(`{"schemaVersion": 1, "steps": [
		{"id": "list", "type": "transform", "output": "[1, 2, 3]"},
		` + mapStep + `]}`)
}

func TestParseMapStep(t *testing.T) {
	d, err := Parse(mapDef(`{"id": "each", "type": "map", "needs": ["list"], "items": "steps.list.output", "concurrency": 20, "failurePolicy": "continue",
		"step": {"type": "http", "sideEffect": true, "request": {"method": "POST", "url": "https://api.example.com/items/{{ index }}", "body": {"n": "{{ item }}"}},
		  "retry": {"maxAttempts": 3}}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m, _ := d.StepByID("each")
	if m.MapConcurrency() != 20 || m.MapFailurePolicy() != MapContinue || !m.MapRunsItems() || !m.HasSideEffect() {
		t.Fatalf("map step = %+v", m)
	}
	if m.Step.RetryPolicy().MaxAttempts != 3 {
		t.Fatalf("inner retry = %+v", m.Step.RetryPolicy())
	}
	if got := d.Reads("each"); len(got) != 1 || got[0] != "list" {
		t.Fatalf("Reads(each) = %v, want [list]", got)
	}
	d, err = Parse(mapDef(`{"id": "each", "type": "map", "needs": ["list"], "items": "steps.list.output", "step": {"type": "transform", "output": {"i": "index", "double": "item * 2"}}}`))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	m, _ = d.StepByID("each")
	if m.MapConcurrency() != DefaultMapConcurrency || m.MapFailurePolicy() != MapFail || m.MapRunsItems() || m.HasSideEffect() {
		t.Fatalf("map step = %+v", m)
	}
}

func TestParseMapStepRefused(t *testing.T) {
	cases := []struct {
		name, step, path, msg string
	}{
		{"missing items", `{"id": "each", "type": "map", "step": {"type": "transform", "output": "item"}}`, "$.steps[1].items", "is required"},
		{"missing step", `{"id": "each", "type": "map", "items": "[1]"}`, "$.steps[1].step", "is required"},
		{"concurrency zero", `{"id": "each", "type": "map", "items": "[1]", "concurrency": 0, "step": {"type": "transform", "output": "item"}}`, "$.steps[1].concurrency", ""},
		{"concurrency too high", `{"id": "each", "type": "map", "items": "[1]", "concurrency": 101, "step": {"type": "transform", "output": "item"}}`, "$.steps[1].concurrency", ""},
		{"bad policy", `{"id": "each", "type": "map", "items": "[1]", "failurePolicy": "ignore", "step": {"type": "transform", "output": "item"}}`, "$.steps[1].failurePolicy", ""},
		{"inner id", `{"id": "each", "type": "map", "items": "[1]", "step": {"id": "x", "type": "transform", "output": "item"}}`, "$.steps[1].step.id", "no id of its own"},
		{"inner needs", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "transform", "needs": ["list"], "output": "item"}}`, "$.steps[1].step.needs", "no needs of its own"},
		{"nested map", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "map", "items": "[1]", "step": {"type": "transform", "output": "item"}}}`, "$.steps[1].step.type", "cannot contain another map"},
		{"inner approval", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "approval", "approvers": {"roles": ["admin"]}}}`, "$.steps[1].step.type", ""},
		{"bad items expr", `{"id": "each", "type": "map", "items": "[1", "step": {"type": "transform", "output": "item"}}`, "$.steps[1].items", "invalid expression"},
		{"items reads non-dependency", `{"id": "each", "type": "map", "items": "steps.list.output", "step": {"type": "transform", "output": "item"}}`, "$.steps[1].items", "not a dependency"},
		{"inner reads non-dependency", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "transform", "output": "steps.list.output"}}`, "$.steps[1].step.output", "not a dependency"},
		{"inner bad field", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "transform", "output": "item", "request": {"method": "GET", "url": "https://x"}}}`, "$.steps[1].step.request", "not allowed"},
		{"map with retry", `{"id": "each", "type": "map", "items": "[1]", "retry": {"maxAttempts": 2}, "step": {"type": "transform", "output": "item"}}`, "$.steps[1].retry", "not allowed for map steps"},
		{"inner bad retry", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "http", "request": {"method": "GET", "url": "https://x"}, "retry": {"maxAttempts": 2, "maxInterval": "48h"}}}`, "$.steps[1].step.retry.maxInterval", "exceeds"},
		{"item outside map", `{"id": "each", "type": "transform", "output": "item + 1"}`, "$.steps[1].output", "only inside a map step"},
		{"index in map items", `{"id": "each", "type": "map", "items": "[index]", "step": {"type": "transform", "output": "item"}}`, "$.steps[1].items", "only inside a map step"},
		{"map fields on transform", `{"id": "each", "type": "transform", "output": "1", "items": "[1]"}`, "$.steps[1].items", "not allowed for transform steps"},
		{"inner if", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "transform", "if": "item > 0", "output": "item"}}`, "$.steps[1].step.if", "not allowed"},
		{"inner at_most_once", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "http", "sideEffect": true, "delivery": "at_most_once", "request": {"method": "POST", "url": "https://x"}}}`, "$.steps[1].step.delivery", "not supported"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(mapDef(c.step))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Parse = %v, want a ValidationError", err)
			}
			for _, p := range ve.Problems {
				if p.Path == c.path && strings.Contains(p.Message, c.msg) {
					return
				}
			}
			t.Fatalf("no problem at %s containing %q in %v", c.path, c.msg, ve.Problems)
		})
	}
}

func TestMapItemShadowedByComprehension(t *testing.T) {
	if _, err := Parse(mapDef(`{"id": "each", "type": "transform", "output": "[1, 2].map(item, item * 2)"}`)); err != nil {
		t.Fatalf("a comprehension variable named item is not the map's item: %v", err)
	}
}
