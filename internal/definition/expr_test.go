package definition

import (
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func testEnv() Env {
	return Env{
		Input: map[string]any{"ticketId": "T-42", "count": float64(3), "tags": []any{"a", "b"}},
		Steps: map[string]any{
			"fetch": map[string]any{"output": map[string]any{
				"status": float64(200),
				"body":   map[string]any{"subject": "Printer is on fire", "priority": float64(1)},
			}},
			"classify": map[string]any{"output": map[string]any{"text": "urgent: hardware"}},
		},
		Run: map[string]any{"id": "run_1"},
		Env: map[string]any{"name": "production"},
	}
}

func TestEval(t *testing.T) {
	tests := []struct {
		expr string
		want any
	}{
		{"input.ticketId", "T-42"},
		{"steps.fetch.output.body.subject", "Printer is on fire"},
		{"steps.fetch.output.status == 200", true},
		{"input.count > 2", true}, // double compared with int
		{"1 + 2", int64(3)},
		{"2.5 * 2.0", 5.0},
		{"input.count", 3.0},
		{"null", nil},
		{"[1, 'two', true]", []any{int64(1), "two", true}},
		{"{'a': input.tags, 'b': {'c': run.id}}", map[string]any{"a": []any{"a", "b"}, "b": map[string]any{"c": "run_1"}}},
		{"steps.classify.output.text.contains('urgent')", true},
		{"steps.classify.output.text.split(':')[0].upperAscii()", "URGENT"}, // strings ext
		{"base64.encode(b'hi')", "aGk="},                                    // encoders ext
		{"math.greatest(1, 5, 3)", int64(5)},                                // math ext
		{"[3, 1, 2].sort()", []any{int64(1), int64(2), int64(3)}},           // lists ext
		{"input.?missing.orValue('default')", "default"},                    // optionals
		{"timestamp('2030-01-02T03:04:05Z')", "2030-01-02T03:04:05Z"},       // timestamps become RFC 3339
		{"env.name == 'production' ? 'prod' : 'other'", "prod"},
		{"has(steps.fetch) && !has(steps.review)", true},
		{"b'\\x00\\x01'", "AAE="},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			got, err := Eval("$.x", tt.expr, testEnv())
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Eval = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestEvalErrors(t *testing.T) {
	for _, expr := range []string{
		"steps.missing.output", // no such key at run time
		"input.ticketId +",     // does not compile
		"nope",                 // undeclared
		"1 / 0",                // division by zero
		"{1: 'int keys'}",      // not representable as JSON
		"",                     // empty
	} {
		if v, err := Eval("$.x", expr, testEnv()); err == nil {
			t.Errorf("Eval(%q) = %#v, want error", expr, v)
		}
	}
}

func TestEvalBool(t *testing.T) {
	ok, err := EvalBool("$.x", "steps.classify.output.text.contains('urgent')", testEnv())
	if err != nil || !ok {
		t.Errorf("EvalBool = %v, %v", ok, err)
	}
	ok, err = EvalBool("$.x", "input.count < 1", testEnv())
	if err != nil || ok {
		t.Errorf("EvalBool = %v, %v", ok, err)
	}
	if _, err := EvalBool("$.x", "input.ticketId", testEnv()); err == nil || !strings.Contains(err.Error(), "want bool") {
		t.Errorf("non-bool result: err = %v", err)
	}
	// Nil maps in Env are treated as empty rather than crashing.
	if ok, err := EvalBool("$.x", "size(steps) == 0 && !has(run.id)", Env{}); err != nil || !ok {
		t.Errorf("empty env: %v, %v", ok, err)
	}
}

func TestEvalConcurrentUsesCache(t *testing.T) {
	const expr = "input.count * 2.0"
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if v, err := Eval("$.x", expr, testEnv()); err != nil || v != 6.0 {
				t.Errorf("Eval = %v, %v", v, err)
			}
		})
	}
	wg.Wait()
	first, _ := programs.Load(expr)
	if compileExpr(expr) != first.(*compiled) {
		t.Error("expression was compiled twice")
	}
}

func TestInterpolate(t *testing.T) {
	tests := []struct {
		tmpl, want string
	}{
		{"https://crm.example.com/tickets/{{ input.ticketId }}/notes", "https://crm.example.com/tickets/T-42/notes"},
		{"no placeholders", "no placeholders"},
		{"{{input.count}} items", "3 items"},
		{"{{ 1 + 1 }}", "2"},
		{"tags={{ input.tags }}", `tags=["a","b"]`},
		{"body={{ steps.fetch.output.body }}", `body={"priority":1,"subject":"Printer is on fire"}`},
		{"{{ input.?nope.orValue(null) }}", "null"},
		{"a{{ 'x' }}b{{ 'y' }}c", "axbyc"},
		{"{{ '}}' }}", "}}"},
		{"{{ {'k': {'n': 1}}.k.n }}", "1"},
		{`{{ "say \"hi\"" }}`, `say "hi"`},
		{"html <&> {{ '<b>' }}", "html <&> <b>"},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			got, err := Interpolate("$.x", tt.tmpl, testEnv())
			if err != nil {
				t.Fatalf("Interpolate: %v", err)
			}
			if got != tt.want {
				t.Errorf("Interpolate = %q, want %q", got, tt.want)
			}
		})
	}
	for _, bad := range []string{"{{ input.ticketId ", "{{ }}", "{{ nope }}", "{{ 'unclosed }}"} {
		if got, err := Interpolate("$.x", bad, testEnv()); err == nil {
			t.Errorf("Interpolate(%q) = %q, want error", bad, got)
		}
	}
}

func TestEvalTemplateValue(t *testing.T) {
	body := map[string]any{
		"text":     "Ticket {{ input.ticketId }}: {{ steps.fetch.output.body.subject }}",
		"priority": "{{ steps.fetch.output.body.priority }}",
		"tags":     "{{ input.tags }}",
		"nested":   []any{"{{ run.id }}", json.Number("7"), true, nil, map[string]any{"env": "env={{ env.name }}"}},
		"literal":  2.5,
	}
	got, err := EvalTemplateValue("$.x", body, testEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"text":     "Ticket T-42: Printer is on fire",
		"priority": 1.0,             // a whole-string placeholder keeps its type
		"tags":     []any{"a", "b"}, // including lists and objects
		"nested":   []any{"run_1", int64(7), true, nil, map[string]any{"env": "env=production"}},
		"literal":  2.5,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EvalTemplateValue =\n%#v\nwant\n%#v", got, want)
	}
	if body["text"] != "Ticket {{ input.ticketId }}: {{ steps.fetch.output.body.subject }}" {
		t.Error("EvalTemplateValue modified its input")
	}
	if _, err := EvalTemplateValue("$.x", []any{"ok", "{{ missing }}"}, testEnv()); err == nil {
		t.Error("bad leaf did not fail")
	}
}

func TestEvalOutput(t *testing.T) {
	tests := []struct {
		raw  string
		want any
	}{
		{`"steps.classify.output.text"`, "urgent: hardware"},
		{`{"ticket": "input.ticketId", "label": "steps.classify.output.text"}`, map[string]any{"ticket": "T-42", "label": "urgent: hardware"}},
		{`["input.count + 1.0", 10, 1.5, true, null, {"deep": ["run.id"]}]`, []any{4.0, int64(10), 1.5, true, nil, map[string]any{"deep": []any{"run_1"}}}},
		{`"steps.fetch.output.body"`, map[string]any{"subject": "Printer is on fire", "priority": 1.0}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := EvalOutput("$.x", json.RawMessage(tt.raw), testEnv())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("EvalOutput = %#v, want %#v", got, tt.want)
			}
		})
	}
	for _, bad := range []string{``, `{"x": "input.("}`, `not json`} {
		if _, err := EvalOutput("$.x", json.RawMessage(bad), testEnv()); err == nil {
			t.Errorf("EvalOutput(%q) succeeded", bad)
		}
	}
}

func TestEvalDesignExample(t *testing.T) {
	d, err := Parse(loadExample(t))
	if err != nil {
		t.Fatal(err)
	}
	env := testEnv()
	shape, _ := d.StepByID("shape")
	out, err := EvalOutput("$.x", shape.Output, env)
	if err != nil {
		t.Fatal(err)
	}
	env.Steps["shape"] = map[string]any{"output": out}
	post, _ := d.StepByID("post")
	url, err := Interpolate("$.x", post.Request.URL, env)
	if err != nil || url != "https://crm.example.com/tickets/T-42/notes" {
		t.Errorf("url = %q, %v", url, err)
	}
	body, err := EvalTemplateValue("$.x", post.Request.Body, env)
	if err != nil || !reflect.DeepEqual(body, map[string]any{"text": "urgent: hardware"}) {
		t.Errorf("body = %#v, %v", body, err)
	}
	result, err := Eval("$.x", d.Output, env)
	if err != nil || !reflect.DeepEqual(result, map[string]any{"ticket": "T-42", "label": "urgent: hardware"}) {
		t.Errorf("output = %#v, %v", result, err)
	}
}

func TestStepRefs(t *testing.T) {
	tests := []struct {
		expr    string
		ids     []string
		dynamic bool
	}{
		{"steps.a.output.x + steps.b.output", []string{"a", "b"}, false},
		{"steps['c'].output", []string{"c"}, false},
		{"steps.?d.orValue(1)", []string{"d"}, false},
		{"has(steps.e.output)", []string{"e"}, false},
		{"[1].map(x, steps.f.output)", []string{"f"}, false},
		{"steps[input.which]", nil, true},
		{"size(steps)", nil, true},
		{"steps.exists(k, k == 'g')", nil, true},
		{"[1].map(steps, steps + 1)", nil, false}, // a comprehension variable shadows steps
		{"input.steps.h", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			c := compileExpr(tt.expr)
			if c.err != nil {
				t.Fatal(c.err)
			}
			ids, dynamic := stepRefs(c.ast)
			if !reflect.DeepEqual(ids, tt.ids) || dynamic != tt.dynamic {
				t.Errorf("stepRefs = %v, %v; want %v, %v", ids, dynamic, tt.ids, tt.dynamic)
			}
		})
	}
}
