package definition

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func loadExample(t *testing.T) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/design_example.json")
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestParseDesignExample(t *testing.T) {
	d, err := Parse(loadExample(t))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := d.TopoOrder(), []string{"fetch", "classify", "review", "shape", "post"}; !slices.Equal(got, want) {
		t.Errorf("TopoOrder = %v, want %v", got, want)
	}
	if len(d.Steps) != 5 || d.SchemaVersion != 1 || d.Output != "steps.shape.output" {
		t.Fatalf("unexpected definition: %+v", d)
	}

	fetch, ok := d.StepByID("fetch")
	if !ok {
		t.Fatal("StepByID(fetch) not found")
	}
	if fetch.Timeout.Duration != 10*time.Second || fetch.Request.Method != "GET" || fetch.Credential != "crm" {
		t.Errorf("fetch = %+v", fetch)
	}
	if !slices.Equal(fetch.Expect.Status, []int{200}) {
		t.Errorf("fetch.Expect.Status = %v", fetch.Expect.Status)
	}
	if p := fetch.RetryPolicy(); p.MaxAttempts != 5 || p.MaxInterval.Duration != time.Minute {
		t.Errorf("fetch retry = %+v", p)
	}
	review, _ := d.StepByID("review")
	if review.Timeout.Duration != 4*time.Hour || review.TimeoutAction() != OnTimeoutReject || !slices.Equal(review.Approvers.Roles, []string{"operator"}) {
		t.Errorf("review = %+v", review)
	}
	classify, _ := d.StepByID("classify")
	if classify.MaxTokens != 200 || classify.Messages[0].Role != "user" {
		t.Errorf("classify = %+v", classify)
	}
	post, _ := d.StepByID("post")
	if !post.SideEffect || post.Request.Body.(map[string]any)["text"] != "{{ steps.shape.output.label }}" {
		t.Errorf("post = %+v", post)
	}
	if _, ok := d.StepByID("nope"); ok {
		t.Error("StepByID(nope) found a step")
	}
}

func TestParseYAML(t *testing.T) {
	yamlDoc := `
schemaVersion: 1
input:
  type: object
steps:
  - id: fetch
    type: http
    request:
      method: GET
      url: "https://example.com/{{ input.id }}"
    timeout: 10s
  - id: wait
    type: delay
    needs: [fetch]
    duration: 1h
output: steps.fetch.output.body
`
	d, err := Parse([]byte(yamlDoc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if w, _ := d.StepByID("wait"); w.Duration.Duration != time.Hour {
		t.Errorf("wait.Duration = %v", w.Duration)
	}

	// The same definition written as JSON must be the same definition.
	jsonDoc := `{"schemaVersion":1,"input":{"type":"object"},"output":"steps.fetch.output.body","steps":[
	  {"id":"fetch","type":"http","timeout":"10s","request":{"url":"https://example.com/{{ input.id }}","method":"GET"}},
	  {"id":"wait","type":"delay","needs":["fetch"],"duration":"60m"}]}`
	dj, err := Parse([]byte(jsonDoc))
	if err != nil {
		t.Fatalf("Parse JSON: %v", err)
	}
	if d.Hash() != dj.Hash() {
		t.Error("YAML and JSON forms of one definition hash differently")
	}

	_, err = Parse([]byte("steps: [unclosed"))
	assertProblems(t, err, []Problem{{Path: "$"}})
}

func TestHashStable(t *testing.T) {
	a := `{"schemaVersion":1,"input":{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}},
	  "steps":[{"id":"s","type":"transform","output":{"x":"input.a","y":"input.b","n":1.0}}],"maxCostUSD":0.5}`
	b := `{"maxCostUSD":5e-1,"steps":[{"output":{"n":1,"y":"input.b","x":"input.a"},"type":"transform","id":"s"}],
	  "input":{"properties":{"b":{"type":"number"},"a":{"type":"string"}},"type":"object"},"schemaVersion":1}`
	c := strings.Replace(a, `"input.b"`, `"input.b + 1.0"`, 1)

	da, err := Parse([]byte(a))
	if err != nil {
		t.Fatal(err)
	}
	db, err := Parse([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	dc, err := Parse([]byte(c))
	if err != nil {
		t.Fatal(err)
	}
	h := da.Hash()
	if len(h) != 64 {
		t.Errorf("Hash = %q, want 64 hex characters", h)
	}
	if h != da.Hash() {
		t.Error("Hash is not deterministic")
	}
	if h != db.Hash() {
		t.Error("Hash depends on key order or number formatting")
	}
	if h == dc.Hash() {
		t.Error("different definitions hash the same")
	}
}

func TestTopoOrderKeepsDocumentOrderForTies(t *testing.T) {
	d, err := Parse([]byte(`{"schemaVersion":1,"steps":[
	  {"id":"join","type":"transform","needs":["c","a"],"output":"1"},
	  {"id":"c","type":"transform","needs":["b"],"output":"1"},
	  {"id":"b","type":"transform","output":"1"},
	  {"id":"a","type":"transform","output":"1"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.TopoOrder(), []string{"b", "c", "a", "join"}; !slices.Equal(got, want) {
		t.Errorf("TopoOrder = %v, want %v", got, want)
	}
}

// steps wraps step objects into an otherwise valid definition.
func steps(s ...string) string {
	return `{"schemaVersion":1,"steps":[` + strings.Join(s, ",") + `]}`
}

const (
	okHTTP      = `{"id":"a","type":"http","request":{"method":"GET","url":"https://example.com"}}`
	okTransform = `{"id":"a","type":"transform","output":"input"}`
)

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []Problem // Message is a substring; problems must match exactly in order
	}{
		{"invalid json", `{"schemaVersion":1,`, []Problem{{"$", "invalid JSON"}}},
		{"empty", "  ", []Problem{{"$", "empty"}}},
		{"unsupported schemaVersion", `{"schemaVersion":2,"steps":[{"id":"x","type":"teleport"}]}`,
			[]Problem{{"$.schemaVersion", "unsupported schemaVersion 2"}}},
		{"missing schemaVersion", `{"steps":[` + okHTTP + `]}`, []Problem{{"$.schemaVersion", "is required"}}},
		{"missing steps", `{"schemaVersion":1}`, []Problem{{"$.steps", "is required"}}},
		{"empty steps", `{"schemaVersion":1,"steps":[]}`, []Problem{{"$.steps", "must not be empty"}}},
		{"unknown top-level field", `{"schemaVersion":1,"name":"x","steps":[` + okHTTP + `]}`,
			[]Problem{{"$.name", "unknown field"}}},
		{"unknown step field", steps(`{"id":"a","type":"transform","output":"1","colour":"red"}`),
			[]Problem{{"$.steps[0].colour", "unknown field"}}},
		{"unknown nested field", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u","verb":"x"}}`),
			[]Problem{{"$.steps[0].request.verb", "unknown field"}}},
		{"unknown step type", steps(`{"id":"a","type":"webhook"}`),
			[]Problem{{"$.steps[0].type", "value must be one of"}}},
		{"bad step id", steps(`{"id":"Fetch","type":"transform","output":"1"}`),
			[]Problem{{"$.steps[0].id", "invalid step id"}}},
		{"duplicate id", steps(okTransform, `{"id":"b","type":"transform","output":"1"}`, okTransform),
			[]Problem{{"$.steps[2].id", `duplicate step id "a" (already used by $.steps[0])`}}},
		{"unknown need", steps(okTransform, `{"id":"b","type":"transform","needs":["a","ghost"],"output":"1"}`),
			[]Problem{{"$.steps[1].needs[1]", `unknown step "ghost"`}}},
		{"self need", steps(`{"id":"a","type":"transform","needs":["a"],"output":"1"}`),
			[]Problem{{"$.steps[0].needs[0]", "cannot need itself"}}},
		{"cycle", steps(
			`{"id":"start","type":"transform","output":"1"}`,
			`{"id":"a","type":"transform","needs":["start","c"],"output":"1"}`,
			`{"id":"b","type":"transform","needs":["a"],"output":"1"}`,
			`{"id":"c","type":"transform","needs":["b"],"output":"1"}`),
			[]Problem{{"$.steps[1].needs[1]", "cycle: a -> c -> b -> a"}}},
		{"bad CEL in if", steps(`{"id":"a","type":"transform","if":"input.x ==","output":"1"}`),
			[]Problem{{"$.steps[0].if", "invalid expression"}}},
		{"non-bool if", steps(`{"id":"a","type":"transform","if":"'yes'","output":"1"}`),
			[]Problem{{"$.steps[0].if", "must produce a bool"}}},
		{"undeclared variable", steps(`{"id":"a","type":"transform","output":"inputs.x"}`),
			[]Problem{{"$.steps[0].output", "undeclared reference"}}},
		{"bad CEL in url template", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"https://x/{{ input.( }}"}}`),
			[]Problem{{"$.steps[0].request.url", "invalid expression"}}},
		{"bad CEL in header", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u","headers":{"X-Trace":"{{ run. }}"}}}`),
			[]Problem{{"$.steps[0].request.headers['X-Trace']", "invalid expression"}}},
		{"bad CEL in body leaf", steps(`{"id":"a","type":"http","request":{"method":"POST","url":"u","body":{"items":[{"text":"ok"},{"text":"{{ 1 + }}"}]}}}`),
			[]Problem{{"$.steps[0].request.body.items[1].text", "invalid expression"}}},
		{"unterminated template", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"Hi {{ input.name"}]}`),
			[]Problem{{"$.steps[0].messages[0].content", "unterminated {{"}}},
		{"empty template", steps(`{"id":"a","type":"approval","approvers":{"roles":["operator"]},"message":"ok? {{ }}"}`),
			[]Problem{{"$.steps[0].message", "empty {{ }} expression"}}},
		{"bad CEL in transform leaf", steps(`{"id":"a","type":"transform","output":{"ticket":"input.id","label":"'x' +"}}`),
			[]Problem{{"$.steps[0].output.label", "invalid expression"}}},
		{"bad CEL in top-level output", `{"schemaVersion":1,"steps":[` + okTransform + `],"output":"steps.a.output)"}`,
			[]Problem{{"$.output", "invalid expression"}}},
		{"bad CEL in until", steps(`{"id":"a","type":"delay","until":"timestamp("}`),
			[]Problem{{"$.steps[0].until", "invalid expression"}}},
		{"bad duration", steps(`{"id":"a","type":"transform","output":"1","timeout":"10 seconds"}`),
			[]Problem{{"$.steps[0].timeout", `invalid duration "10 seconds"`}}},
		{"negative duration", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"retry":{"initialInterval":"-1s"}}`),
			[]Problem{{"$.steps[0].retry.initialInterval", "must be positive"}}},
		{"zero delay", steps(`{"id":"a","type":"delay","duration":"0s"}`),
			[]Problem{{"$.steps[0].duration", "must be positive"}}},
		{"timeout over 24h", steps(`{"id":"a","type":"transform","output":"1","timeout":"25h"}`),
			[]Problem{{"$.steps[0].timeout", "timeout 25h exceeds the maximum of 24h"}}},
		{"approval timeout over 30 days", steps(`{"id":"a","type":"approval","approvers":{"roles":["operator"]},"timeout":"721h"}`),
			[]Problem{{"$.steps[0].timeout", "exceeds the maximum of 30 days"}}},
		{"initialInterval above maxInterval", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"retry":{"initialInterval":"2m","maxInterval":"30s"}}`),
			[]Problem{{"$.steps[0].retry.initialInterval", "greater than maxInterval"}}},
		{"maxAttempts out of range", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"retry":{"maxAttempts":101}}`),
			[]Problem{{"$.steps[0].retry.maxAttempts", "maximum"}}},
		{"backoffCoefficient below 1", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"retry":{"backoffCoefficient":0.5}}`),
			[]Problem{{"$.steps[0].retry.backoffCoefficient", "minimum"}}},
		{"bad input schema", `{"schemaVersion":1,"input":{"type":"objekt"},"steps":[` + okTransform + `]}`,
			[]Problem{{"$.input", "invalid JSON Schema"}}},
		{"input schema with external ref", `{"schemaVersion":1,"input":{"$ref":"file:///etc/passwd"},"steps":[` + okTransform + `]}`,
			[]Problem{{"$.input", "not allowed"}}},
		{"bad expect schema", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"expect":{"schema":{"required":"subject"}}}`),
			[]Problem{{"$.steps[0].expect.schema", "invalid JSON Schema"}}},
		{"http without request", steps(`{"id":"a","type":"http"}`),
			[]Problem{{"$.steps[0].request", "is required for http steps"}}},
		{"request without url", steps(`{"id":"a","type":"http","request":{"method":"GET"}}`),
			[]Problem{{"$.steps[0].request.url", "is required"}}},
		{"bad method", steps(`{"id":"a","type":"http","request":{"method":"FETCH","url":"u"}}`),
			[]Problem{{"$.steps[0].request.method", "value must be one of"}}},
		{"llm without model", steps(`{"id":"a","type":"llm","messages":[{"role":"user","content":"hi"}]}`),
			[]Problem{{"$.steps[0].model", "is required for llm steps"}}},
		{"llm without messages", steps(`{"id":"a","type":"llm","model":"m","messages":[]}`),
			[]Problem{{"$.steps[0].messages", "must not be empty"}}},
		{"bad role", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"robot","content":"hi"}]}`),
			[]Problem{{"$.steps[0].messages[0].role", "value must be one of"}}},
		{"maxTokens too large", steps(`{"id":"a","type":"llm","model":"m","maxTokens":200001,"messages":[{"role":"user","content":"hi"}]}`),
			[]Problem{{"$.steps[0].maxTokens", "maximum"}}},
		{"outputSchema that does not compile", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":{"type":"object","required":"label"}}`),
			[]Problem{{"$.steps[0].outputSchema", "invalid JSON Schema"}}},
		{"outputSchema with external ref", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":{"$ref":"https://example.com/s.json"}}`),
			[]Problem{{"$.steps[0].outputSchema", "not allowed"}}},
		{"outputSchema not an object schema", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":{"type":"array"}}`),
			[]Problem{{"$.steps[0].outputSchema", `"type": "object" at its root`}}},
		{"outputSchema not an object", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":true}`),
			[]Problem{{"$.steps[0].outputSchema", "want object"}}},
		{"outputSchema on http", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"outputSchema":{"type":"object"}}`),
			[]Problem{{"$.steps[0].outputSchema", "not allowed for http steps"}}},
		{"four fallbacks", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"fallbacks":[
			{"credential":"c","model":"m1"},{"credential":"c","model":"m2"},{"credential":"c","model":"m3"},{"credential":"c","model":"m4"}]}`),
			[]Problem{{"$.steps[0].fallbacks", "at most 3"}}},
		{"fallback without model", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"fallbacks":[{"credential":"c","model":"m1"},{"credential":"c"}]}`),
			[]Problem{{"$.steps[0].fallbacks[1].model", "is required"}}},
		{"fallback without credential", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"fallbacks":[{"model":"m1"}]}`),
			[]Problem{{"$.steps[0].fallbacks[0].credential", "is required"}}},
		{"fallback with empty model", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"fallbacks":[{"credential":"c","model":""}]}`),
			[]Problem{{"$.steps[0].fallbacks[0].model", "minLength"}}},
		{"fallbacks on transform", steps(`{"id":"a","type":"transform","output":"1","fallbacks":[]}`),
			[]Problem{{"$.steps[0].fallbacks", "not allowed for transform steps"}}},
		{"topP above 1", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"topP":1.5}`),
			[]Problem{{"$.steps[0].topP", "maximum"}}},
		{"stop neither string nor list", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"stop":5}`),
			[]Problem{{"$.steps[0].stop", "got number, want string or array"}}},
		{"stop with an empty sequence", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"stop":["END",""]}`),
			[]Problem{{"$.steps[0].stop[1]", "minLength"}}},
		{"seed not an integer", steps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"seed":1.5}`),
			[]Problem{{"$.steps[0].seed", "want integer"}}},
		{"transform without output", steps(`{"id":"a","type":"transform"}`),
			[]Problem{{"$.steps[0].output", "is required for transform steps"}}},
		{"approval without approvers", steps(`{"id":"a","type":"approval"}`),
			[]Problem{{"$.steps[0].approvers", "is required for approval steps"}}},
		{"bad onTimeout", steps(`{"id":"a","type":"approval","approvers":{"roles":["operator"]},"onTimeout":"ignore"}`),
			[]Problem{{"$.steps[0].onTimeout", "value must be one of"}}},
		{"delay without duration or until", steps(`{"id":"a","type":"delay"}`),
			[]Problem{{"$.steps[0]", `one of "duration" or "until" is required for delay steps`}}},
		{"delay with both", steps(`{"id":"a","type":"delay","duration":"1m","until":"'2030-01-01T00:00:00Z'"}`),
			[]Problem{{"$.steps[0].until", "not both"}}},
		{"field of another type", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u"},"model":"gpt"}`),
			[]Problem{{"$.steps[0].model", "not allowed for http steps"}}},
		{"maxCostUSD zero", `{"schemaVersion":1,"maxCostUSD":0,"steps":[` + okTransform + `]}`,
			[]Problem{{"$.maxCostUSD", "exclusiveMinimum"}}},
		{"reference to non-ancestor", steps(okTransform,
			`{"id":"b","type":"transform","output":{"label":"steps.a.output"}}`),
			[]Problem{{"$.steps[1].output.label", "step a is not a dependency of b"}}},
		{"reference to dependent in if", steps(
			`{"id":"a","type":"transform","if":"has(steps.b.output)","output":"1"}`,
			`{"id":"b","type":"transform","needs":["a"],"output":"1"}`),
			[]Problem{{"$.steps[0].if", "step b is not a dependency of a"}}},
		{"reference to unknown step", steps(`{"id":"a","type":"http","request":{"method":"GET","url":"u/{{ steps['ghost'].output }}"}}`),
			[]Problem{{"$.steps[0].request.url", `unknown step "ghost"`}}},
		{"dynamic steps access", steps(okTransform,
			`{"id":"b","type":"transform","needs":["a"],"output":"steps[input.which].output"}`),
			[]Problem{{"$.steps[1].output", "literal id"}}},
		{"unknown step in top-level output", `{"schemaVersion":1,"steps":[` + okTransform + `],"output":"steps.b.output"}`,
			[]Problem{{"$.output", `unknown step "b"`}}},
		{"several problems in path order", steps(
			`{"id":"a","type":"transform","output":"1","timeout":"forever"}`,
			`{"id":"b","type":"transform","output":"1"}`, `{"id":"c","type":"transform","output":"1"}`,
			`{"id":"d","type":"transform","output":"1"}`, `{"id":"e","type":"transform","output":"1"}`,
			`{"id":"f","type":"transform","output":"1"}`, `{"id":"g","type":"transform","output":"1"}`,
			`{"id":"h","type":"transform","output":"1"}`, `{"id":"i","type":"transform","output":"1"}`,
			`{"id":"j","type":"transform","output":"1"}`,
			`{"id":"k","type":"transform","output":"1","bogus":true}`,
			`{"id":"l","type":"nope"}`),
			[]Problem{
				{"$.steps[0].timeout", "invalid duration"},
				{"$.steps[10].bogus", "unknown field"},
				{"$.steps[11].type", "value must be one of"},
			}},
		{"schema and semantic problems together", steps(
			`{"id":"a","type":"transform","output":"1","extra":1}`,
			`{"id":"b","type":"transform","needs":["zzz"],"output":"1"}`),
			[]Problem{
				{"$.steps[0].extra", "unknown field"},
				{"$.steps[1].needs[0]", `unknown step "zzz"`},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", d)
			}
			assertProblems(t, err, tt.want)
		})
	}
}

func assertProblems(t *testing.T, err error, want []Problem) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T (%v), want *ValidationError", err, err)
	}
	if len(ve.Problems) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(ve.Problems), len(want), formatProblems(ve.Problems))
	}
	for i, w := range want {
		got := ve.Problems[i]
		if got.Path != w.Path || !strings.Contains(got.Message, w.Message) {
			t.Errorf("problem %d = %q: %q, want %q containing %q", i, got.Path, got.Message, w.Path, w.Message)
		}
	}
	if !strings.Contains(err.Error(), want[0].Path) {
		t.Errorf("Error() = %q does not mention %s", err.Error(), want[0].Path)
	}
}

func formatProblems(ps []Problem) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString("  " + p.String() + "\n")
	}
	return b.String()
}

func TestValidationErrorSummary(t *testing.T) {
	var many []string
	for i := range 8 {
		many = append(many, `{"id":"s`+string(rune('a'+i))+`","type":"transform"}`)
	}
	_, err := Parse([]byte(steps(many...)))
	msg := err.Error()
	if !strings.Contains(msg, "8 problems") || !strings.Contains(msg, "and 3 more") {
		t.Errorf("Error() = %q", msg)
	}
}

func TestValidateInput(t *testing.T) {
	d, err := Parse(loadExample(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ValidateInput(map[string]any{"ticketId": "T-1"}); err != nil {
		t.Errorf("valid input rejected: %v", err)
	}
	err = d.ValidateInput(map[string]any{"ticketId": 5})
	assertProblems(t, err, []Problem{{"$.ticketId", "want string"}})
	err = d.ValidateInput(map[string]any{})
	assertProblems(t, err, []Problem{{"$.ticketId", "is required"}})

	if err := (&Definition{}).ValidateInput("anything"); err != nil {
		t.Errorf("definition without input schema rejected input: %v", err)
	}
}

func TestDurationJSON(t *testing.T) {
	var s Step
	if err := json.Unmarshal([]byte(`{"timeout":"1m30s"}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.Timeout.Duration != 90*time.Second {
		t.Errorf("Timeout = %v", s.Timeout)
	}
	b, err := json.Marshal(Step{ID: "x", Type: "delay", Duration: Duration{time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"id":"x","type":"delay","duration":"1h0m0s"}`; got != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
	if err := json.Unmarshal([]byte(`{"timeout":10}`), &s); err == nil {
		t.Error("numeric duration accepted")
	}
}

func TestFormatSchemaIsValidJSON(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(FormatSchema(), &v); err != nil {
		t.Fatal(err)
	}
	if v["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v", v["$schema"])
	}
}

func FuzzParse(f *testing.F) {
	raw, err := os.ReadFile("testdata/design_example.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte(steps(okHTTP, `{"id":"b","type":"delay","needs":["a","b"],"until":"steps.a.output"}`)))
	f.Add([]byte("schemaVersion: 1\nsteps:\n  - id: a\n    type: transform\n    output: {x: input}\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := Parse(raw)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("Parse error %T %v is not a non-empty *ValidationError", err, err)
			}
			return
		}
		// Anything accepted must be a DAG and survive a round trip.
		if len(d.TopoOrder()) != len(d.Steps) {
			t.Fatalf("accepted definition has a cycle")
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		d2, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parsing marshalled definition: %v\n%s", err, b)
		}
		if d.Hash() != d2.Hash() {
			t.Fatalf("hash changed across a round trip")
		}
	})
}

func TestReads(t *testing.T) {
	d, err := Parse(loadExample(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Reads("classify"); len(got) != 1 || got[0] != "fetch" {
		t.Fatalf("Reads(classify) = %v, want [fetch]", got)
	}
	if got := d.Reads("shape"); !slices.Contains(got, "classify") {
		t.Fatalf("Reads(shape) = %v, want classify among them", got)
	}
	if got := d.Reads("fetch"); len(got) != 0 {
		t.Fatalf("Reads(fetch) = %v, want none", got)
	}
}

// A definition holds up to 1,000 steps: a fan-out of 1,000 parses, one more
// is refused with the cap named.
func TestStepCap(t *testing.T) {
	doc := func(n int) []byte {
		list := make([]string, n)
		for i := range list {
			list[i] = fmt.Sprintf(`{"id":"p%d","type":"transform","output":"1"}`, i)
		}
		return []byte(`{"schemaVersion":1,"steps":[` + strings.Join(list, ",") + `]}`)
	}
	d, err := Parse(doc(1000))
	if err != nil {
		t.Fatalf("1,000 steps: %v", err)
	}
	if len(d.TopoOrder()) != 1000 {
		t.Fatalf("topological order holds %d steps, want 1000", len(d.TopoOrder()))
	}
	_, err = Parse(doc(1001))
	if err == nil || !strings.Contains(err.Error(), "want 1,000") {
		t.Fatalf("1,001 steps: want the cap in the error, got %v", err)
	}
}

func TestOutputReads(t *testing.T) {
	for _, tc := range []struct {
		output string
		want   []string
		ok     bool
	}{
		{`"steps.b.output + steps.a.output"`, []string{"b", "a"}, true},
		{`"input.x"`, nil, true},
		{`"steps['a'].output"`, []string{"a"}, true},
		{`"steps[input.k].output"`, nil, false},
		{``, nil, false},
	} {
		doc := `{"schemaVersion":1,"input":{"type":"object"},"steps":[{"id":"a","type":"transform","output":"1"},{"id":"b","type":"transform","output":"2"}]`
		if tc.output != "" {
			doc += `,"output":` + tc.output
		}
		d, err := Parse([]byte(doc + `}`))
		if err != nil {
			t.Fatalf("%s: %v", tc.output, err)
		}
		got, ok := d.OutputReads()
		if ok != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("output %s: OutputReads() = %v, %v; want %v, %v", tc.output, got, ok, tc.want, tc.ok)
		}
	}
}

// TestParseLLMOptions: structured output, sampling parameters and
// fallbacks decode; stop is one string or a list, and a definition that
// spells it either way hashes the same.
func TestParseLLMOptions(t *testing.T) {
	doc := func(stop string) string {
		return steps(`{"id":"a","type":"llm","credential":"openai","model":"gpt-4o","messages":[{"role":"user","content":"hi"}],
			"temperature":0.1,"topP":0.9,"seed":42,"stop":` + stop + `,
			"outputSchema":{"type":"object","required":["label"],"properties":{"label":{"type":"string"}}},
			"fallbacks":[{"credential":"anthropic","model":"claude-sonnet-4-5"},{"credential":"openai","model":"gpt-4o-mini"}]}`)
	}
	d, err := Parse([]byte(doc(`"END"`)))
	if err != nil {
		t.Fatal(err)
	}
	s := d.Steps[0]
	if *s.TopP != 0.9 || *s.Seed != 42 || !slices.Equal(s.Stop, []string{"END"}) || len(s.Fallbacks) != 2 ||
		s.Fallbacks[0] != (Fallback{Credential: "anthropic", Model: "claude-sonnet-4-5"}) || !strings.Contains(string(s.OutputSchema), `"label"`) {
		t.Fatalf("step = %+v", s)
	}
	list, err := Parse([]byte(doc(`["END"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if d.Hash() != list.Hash() {
		t.Error(`stop "END" and ["END"] hash differently`)
	}
	two, err := Parse([]byte(doc(`["END","STOP"]`)))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(two.Steps[0].Stop, []string{"END", "STOP"}) {
		t.Errorf("stop = %v", two.Steps[0].Stop)
	}
}
