package definition

import (
	"slices"
	"testing"
)

func concurrencyDoc(c string) string {
	return `{"schemaVersion":1,"input":{"type":"object","properties":{"customer":{"type":"string"},"n":{"type":"integer"},"o":{"type":"object"}}},` +
		`"concurrency":` + c + `,"steps":[{"id":"a","type":"transform","output":"1"}]}`
}

func TestConcurrencyRefused(t *testing.T) {
	for _, tt := range []struct{ name, c, path string }{
		{"limit 0", `{"limit":0}`, "$.concurrency.limit"},
		{"no limit", `{"key":"input.customer"}`, "$.concurrency"},
		{"unknown onLimit", `{"limit":1,"onLimit":"drop"}`, "$.concurrency.onLimit"},
		{"key does not compile", `{"limit":1,"key":"input.customer +"}`, "$.concurrency.key"},
		{"key reads a step", `{"limit":1,"key":"steps.a.output"}`, "$.concurrency.key"},
		{"key reads env", `{"limit":1,"key":"env.id"}`, "$.concurrency.key"},
		{"key is an object", `{"limit":1,"key":"input.o"}`, "$.concurrency.key"},
		{"key type error", `{"limit":1,"key":"input.customer + 1"}`, "$.concurrency.key"},
		{"unknown field", `{"limit":1,"keys":"input.customer"}`, "$.concurrency"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			paths := problemPaths(t, concurrencyDoc(tt.c))
			if !slices.ContainsFunc(paths, func(p string) bool { return p == tt.path || len(p) > len(tt.path) && p[:len(tt.path)] == tt.path }) {
				t.Fatalf("problems at %v, want one at %s", paths, tt.path)
			}
		})
	}
}

func TestConcurrencyKey(t *testing.T) {
	d, err := Parse([]byte(concurrencyDoc(`{"limit":2,"key":"input.customer","onLimit":"skip_new"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Concurrency.Limit != 2 || d.Concurrency.Mode() != OnLimitSkipNew {
		t.Fatalf("concurrency %+v", d.Concurrency)
	}
	k, err := d.ConcurrencyKey(d.InputValue(map[string]any{"customer": "acme"}))
	if err != nil || k != "acme" {
		t.Fatalf("key %q, %v", k, err)
	}
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'x'
	}
	k, err = d.ConcurrencyKey(d.InputValue(map[string]any{"customer": string(long)}))
	if err != nil || len(k) != len("sha256:")+64 {
		t.Fatalf("long key %q, %v", k, err)
	}
	d, err = Parse([]byte(concurrencyDoc(`{"limit":1,"key":"input.n"}`)))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := d.ConcurrencyKey(d.InputValue(map[string]any{"n": 7})); err != nil || k != "7" {
		t.Fatalf("int key %q, %v", k, err)
	}
	if d.Concurrency.Mode() != OnLimitQueue {
		t.Fatalf("default onLimit %q", d.Concurrency.Mode())
	}
	d, err = Parse([]byte(concurrencyDoc(`{"limit":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	if k, err := d.ConcurrencyKey(d.InputValue(map[string]any{})); err != nil || k != "" {
		t.Fatalf("default key %q, %v", k, err)
	}
}

// TestCheckConcurrency: a setting made outside a definition (a
// per-environment override) is checked by the definition's rules, its key
// type-checked against the deployed definition's input schema when there
// is one, with paths relative to the setting.
func TestCheckConcurrency(t *testing.T) {
	d, err := Parse([]byte(concurrencyDoc(`{"limit":1}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		c    Concurrency
		def  *Definition
		path string
	}{
		{"limit 0", Concurrency{Limit: 0}, d, "$.limit"},
		{"limit too large", Concurrency{Limit: MaxConcurrencyLimit + 1}, nil, "$.limit"},
		{"unknown onLimit", Concurrency{Limit: 1, OnLimit: "drop"}, d, "$.onLimit"},
		{"key does not compile", Concurrency{Limit: 1, Key: "input.customer +"}, nil, "$.key"},
		{"key reads a step", Concurrency{Limit: 1, Key: "steps.a.output"}, d, "$.key"},
		{"key type error", Concurrency{Limit: 1, Key: "input.customer + 1"}, d, "$.key"},
		{"key is an object", Concurrency{Limit: 1, Key: "input.o"}, d, "$.key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			problems := CheckConcurrency(&tt.c, tt.def)
			if !slices.ContainsFunc(problems, func(p Problem) bool { return p.Path == tt.path }) {
				t.Fatalf("problems %v, want one at %s", problems, tt.path)
			}
		})
	}
	for _, c := range []Concurrency{{Limit: 1}, {Limit: 10000, Key: "input.customer", OnLimit: OnLimitSkipNew}} {
		if problems := CheckConcurrency(&c, d); len(problems) != 0 {
			t.Fatalf("%+v: %v", c, problems)
		}
	}
	// Without a deployed definition there are no input types to check.
	if problems := CheckConcurrency(&Concurrency{Limit: 1, Key: "input.customer + 1"}, nil); len(problems) != 0 {
		t.Fatalf("unchecked types: %v", problems)
	}
}
