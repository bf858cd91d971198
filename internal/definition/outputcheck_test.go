package definition

import "testing"

func TestCheckOutput(t *testing.T) {
	d, err := Parse([]byte(`{"schemaVersion": 1, "steps": [
		{"id": "fetch", "type": "http", "request": {"method": "GET", "url": "https://example.com/"},
		 "expect": {"status": [200], "schema": {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}}}},
		{"id": "use", "type": "transform", "needs": ["fetch"], "output": {"first": "steps.fetch.output.body.items[0].n", "who": "steps.fetch.output.body.owner"}}
	]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		out  any
		path string // "-" when it fits
	}{
		{map[string]any{"status": 200, "body": map[string]any{"items": []any{map[string]any{"n": 1}}, "owner": "x"}}, "-"},
		{map[string]any{"status": 200.0, "body": map[string]any{"items": []any{}, "owner": nil}}, "-"},
		{map[string]any{"status": 200.5, "body": map[string]any{"items": []any{}, "owner": "x"}}, "status"},
		{map[string]any{"status": 200, "headers": map[string]any{"a": 1}, "body": map[string]any{"items": []any{}, "owner": "x"}}, "headers.a"},
		{map[string]any{"status": 200, "body": map[string]any{"items": []any{map[string]any{"n": "one"}}, "owner": "x"}}, "body.items[0].n"},
		{map[string]any{"status": 200, "body": map[string]any{"items": []any{map[string]any{}}, "owner": "x"}}, "body.items[0].n"},
		{map[string]any{"status": 200, "body": map[string]any{"items": []any{}}}, "body.owner"},
		{map[string]any{"status": 200}, "body"},
		{[]any{1}, ""},
	} {
		m := d.CheckOutput("fetch", tc.out)
		switch {
		case tc.path == "-":
			if m != nil {
				t.Errorf("%v: unexpected misfit %+v", tc.out, m)
			}
		case m == nil || m.Path != tc.path:
			t.Errorf("%v: misfit %+v, want at %q", tc.out, m, tc.path)
		}
	}
	// A transform's output shape comes from its expressions.
	if m := d.CheckOutput("use", map[string]any{"first": 1, "who": "x"}); m != nil {
		t.Errorf("transform output: %+v", m)
	}
	if m := d.CheckOutput("use", "anything"); m == nil || m.Path != "" {
		t.Errorf("a string for a transform's object: %+v", m)
	}
}
