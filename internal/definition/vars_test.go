package definition

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/envvars"
)

func TestVarsDeclaredAreTypeChecked(t *testing.T) {
	ok := `{"schemaVersion":1,
	 "vars":{"apiBase":{"type":"string","required":true},"limit":{"type":"integer","default":3},"ratio":{"type":"number"}},
	 "steps":[{"id":"t","type":"transform","if":"env.vars.limit > 2",
	   "output":{"url":"env.vars.apiBase + '/x'","n":"env.vars.limit + 1","r":"env.vars.ratio * 2.0"}}]}`
	if _, err := Parse([]byte(ok)); err != nil {
		t.Fatalf("valid definition refused: %v", err)
	}
	for name, tc := range map[string]struct{ def, path, want string }{
		"undeclared": {`{"schemaVersion":1,"vars":{"a":{"type":"string"}},
		  "steps":[{"id":"t","type":"transform","output":{"x":"env.vars.b"}}]}`, "$.steps[0].output.x", "env.vars.b is not declared"},
		"wrong type": {`{"schemaVersion":1,"vars":{"a":{"type":"string"}},
		  "steps":[{"id":"t","type":"transform","output":{"x":"env.vars.a + 1"}}]}`, "$.steps[0].output.x", "type error"},
		"bad default": {`{"schemaVersion":1,"vars":{"a":{"type":"integer","default":"x"}},
		  "steps":[{"id":"t","type":"transform","output":{"x":"1"}}]}`, "$.vars.a.default", "not of type integer"},
		"bad type": {`{"schemaVersion":1,"vars":{"a":{"type":"date"}},
		  "steps":[{"id":"t","type":"transform","output":{"x":"1"}}]}`, "$.vars.a.type", ""},
		"interpolation": {`{"schemaVersion":1,"vars":{"a":{"type":"string"}},
		  "steps":[{"id":"h","type":"http","request":{"method":"GET","url":"https://x.example/{{ env.vars.zz }}"}}]}`, "$.steps[0].request.url", "env.vars.zz is not declared"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(tc.def))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a validation error", err)
			}
			for _, p := range ve.Problems {
				if p.Path == tc.path && strings.Contains(p.Message, tc.want) {
					return
				}
			}
			t.Fatalf("no problem at %s containing %q: %v", tc.path, tc.want, ve.Problems)
		})
	}
	// Without a declaration env.vars is read freely.
	free := `{"schemaVersion":1,"steps":[{"id":"t","type":"transform","output":{"x":"env.vars.anything"}}]}`
	if _, err := Parse([]byte(free)); err != nil {
		t.Fatalf("undeclared definition refused: %v", err)
	}
}

func TestVarsValueAndCheck(t *testing.T) {
	d, err := Parse([]byte(`{"schemaVersion":1,
	 "vars":{"apiBase":{"type":"string","required":true},"limit":{"type":"integer","default":3},"ratio":{"type":"number","required":true}},
	 "steps":[{"id":"t","type":"transform","output":{"x":"env.vars.ratio * 2.0","n":"env.vars.limit + 1","u":"env.vars.apiBase"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	vars := []envvars.Variable{{Name: "apiBase", Type: envvars.String, Value: "http://a"}, {Name: "ratio", Type: envvars.Integer, Value: int64(2)}}
	if p := d.CheckVars(vars); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	got := d.VarsValue(vars)
	if got["ratio"] != float64(2) || got["limit"] != int64(3) || got["apiBase"] != "http://a" {
		t.Fatalf("values: %#v", got)
	}
	out, err := EvalOutput("$.steps[0].output", d.Steps[0].Output, Env{Env: map[string]any{"vars": got}})
	if err != nil {
		t.Fatal(err)
	}
	if m := out.(map[string]any); m["x"] != float64(4) || m["n"] != int64(4) {
		t.Fatalf("output: %#v", out)
	}
	p := d.CheckVars([]envvars.Variable{{Name: "ratio", Type: envvars.String, Value: "x"}})
	if len(p) != 2 || p[0].Name != "apiBase" || p[1].Name != "ratio" {
		t.Fatalf("problems: %v", p)
	}
}
