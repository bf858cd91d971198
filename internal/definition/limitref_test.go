package definition

import (
	"errors"
	"strings"
	"testing"
)

// A step's `limit` is allowed on http and llm steps, refused elsewhere at
// $.steps[i].limit, and must be a valid name; LimitRefs lists the names.
func TestStepLimit(t *testing.T) {
	d, err := Parse(mapDef(`{"id": "call", "type": "http", "limit": "crm-api", "request": {"method": "GET", "url": "https://x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if refs := d.LimitRefs(); len(refs) != 1 || refs[0] != (LimitRef{Index: 1, Name: "crm-api"}) {
		t.Fatalf("LimitRefs = %v", refs)
	}
	if _, err := Parse(mapDef(`{"id": "ask", "type": "llm", "limit": "openai.v1_x", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}`)); err != nil {
		t.Fatalf("llm step with a limit: %v", err)
	}
	cases := []struct{ name, step, path, msg string }{
		{"approval", `{"id": "ok", "type": "approval", "limit": "crm-api", "approvers": {"roles": ["operator"]}}`, "$.steps[1].limit", "not allowed"},
		{"transform", `{"id": "t", "type": "transform", "limit": "crm-api", "output": "1"}`, "$.steps[1].limit", "not allowed"},
		{"delay", `{"id": "d", "type": "delay", "limit": "crm-api", "duration": "1s"}`, "$.steps[1].limit", "not allowed"},
		{"map inner step", `{"id": "each", "type": "map", "items": "[1]", "step": {"type": "http", "limit": "crm-api", "request": {"method": "GET", "url": "https://x"}}}`, "$.steps[1].step.limit", "not allowed"},
		{"bad name", `{"id": "call", "type": "http", "limit": "CRM API", "request": {"method": "GET", "url": "https://x"}}`, "$.steps[1].limit", ""},
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
