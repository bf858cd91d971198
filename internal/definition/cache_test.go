package definition

import (
	"slices"
	"strings"
	"testing"
)

func TestOutputPathsReadFollowLiteralChains(t *testing.T) {
	d, err := Parse([]byte(`{"schemaVersion":1,"steps":[
		{"id":"fetch","type":"http","request":{"method":"GET","url":"https://x.example.com/a"},"cache":{"ttl":"60s","staleIfError":"1h"}},
		{"id":"shape","type":"transform","needs":["fetch"],"output":{
			"s":"steps.fetch.output.body.subject",
			"n":"steps.fetch.output.body.items[0].name + steps.fetch.output.body['meta'].k",
			"h":"has(steps.fetch.output.body.optional) ? 1 : 2",
			"all":"steps.fetch.output.status"}}],
		"output":"steps.fetch.output.body.total"}`))
	if err != nil {
		t.Fatal(err)
	}
	got := d.OutputPathsRead("fetch")
	// has() reads the object it tests (it must be one), not the field.
	want := []string{"body", "body.items[].name", "body.meta.k", "body.subject", "body.total", "status"}
	if !slices.Equal(got, want) {
		t.Fatalf("paths read = %v, want %v", got, want)
	}
	if c := d.Steps[0].Cache; c == nil || c.TTL.Seconds() != 60 || c.StaleIfError.Hours() != 1 {
		t.Fatalf("cache = %+v", c)
	}
}

func TestCachePolicyIsRefusedWhereItCannotApply(t *testing.T) {
	for _, tt := range []struct{ doc, path string }{
		{`{"id":"p","type":"http","sideEffect":true,"request":{"method":"POST","url":"https://x.example.com"},"cache":{"ttl":"1m"}}`, "$.steps[0].cache"},
		{`{"id":"p","type":"http","request":{"method":"GET","url":"https://x.example.com"},"cache":{"ttl":"0s"}}`, "$.steps[0].cache.ttl"},
		{`{"id":"p","type":"http","request":{"method":"GET","url":"https://x.example.com"},"cache":{"ttl":"25h"}}`, "$.steps[0].cache.ttl"},
		{`{"id":"p","type":"http","request":{"method":"GET","url":"https://x.example.com"},"cache":{"ttl":"1m","staleIfError":"-1s"}}`, "$.steps[0].cache.staleIfError"},
		{`{"id":"p","type":"llm","model":"m","messages":[{"role":"user","content":"x"}],"cache":{"ttl":"1m"}}`, "$.steps[0]"},
	} {
		_, err := Parse([]byte(`{"schemaVersion":1,"steps":[` + tt.doc + `]}`))
		if err == nil || !strings.Contains(err.Error(), tt.path) {
			t.Errorf("%s: want a problem at %s, got %v", tt.doc, tt.path, err)
		}
	}
}
