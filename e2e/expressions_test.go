package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// The expression tests go through GraphQL: definitions are type-checked
// when created, integral JSON numbers are CEL ints, and a run, its resume
// and its sandbox replay see values of the same types.

const qRunOutput = `query($id: ID!) { node(id: $id) { ... on Run { output } } }`

// rawRunOutput is a run's output as the API sends it, byte for byte.
func rawRunOutput(t *testing.T, c *client, runID string) string {
	t.Helper()
	r := c.do(qRunOutput, map[string]any{"id": runID})
	var resp struct {
		Data struct {
			Node struct {
				Output json.RawMessage `json:"output"`
			} `json:"node"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.Raw), &resp); err != nil || len(r.Errors) > 0 {
		t.Fatalf("run output: %v %s", err, r.Raw)
	}
	return string(resp.Data.Node.Output)
}

// problemMessage is the message of the VALIDATION problem at path.
func problemMessage(r *result, path string) string {
	for _, e := range r.Errors {
		problems, _ := e.Extensions["problems"].([]any)
		for _, p := range problems {
			if get(p, "path") == path {
				return str(p, "message")
			}
		}
		if p, _ := e.Extensions["path"].(string); p == path {
			return e.Message
		}
	}
	return ""
}

// TestExpressionIntegerArithmetic: `input.amount * 2` with an integer
// input gives the int 240, and a step's integer output takes `+ 1`.
func TestExpressionIntegerArithmetic(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "expr-int")
	wf, _ := deployWorkflow(t, f, "amounts", defJSON(t, `{"schemaVersion":1,
		"input":{"type":"object","required":["amount"],"properties":{"amount":{"type":"integer"}}},
		"steps":[
			{"id":"a","type":"transform","output":{"x":1,"doubled":"input.amount * 2"}},
			{"id":"b","type":"transform","needs":["a"],"output":"steps.a.output.x + 1"},
			{"id":"c","type":"transform","needs":["a"],"if":"steps.a.output.doubled > 200","output":"steps.a.output.doubled / 7"}],
		"output":"{'doubled': steps.a.output.doubled, 'next': steps.b.output, 'quotient': steps.c.output, 'isInt': type(steps.a.output.doubled) == int}"}`))
	id := engStart(t, f.owner, f, wf, map[string]any{"amount": 120})
	run := engFinish(t, f.owner, id, "succeeded")
	if out := rawRunOutput(t, f.owner, id); out != `{"doubled":240,"isInt":true,"next":2,"quotient":34}` {
		t.Errorf("run output %s", out)
	}
	if got := stepOf(run, "a")["output"]; get(got, "doubled") != float64(240) || get(got, "x") != float64(1) {
		t.Errorf("step a output %v", got)
	}
}

// TestExpressionTypeErrorRefusedAtCreate: an expression that cannot
// evaluate for the declared types is refused when the version is created,
// at its JSON path, saying what to write instead, and nothing is written.
func TestExpressionTypeErrorRefusedAtCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "expr-refused")
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "Typed", "s": "typed"}), "createWorkflow.id")
	input := `"input":{"type":"object","properties":{"name":{"type":"string"},"amount":{"type":"integer"},"price":{"type":"number"}}}`
	tests := []struct{ name, steps, path, want string }{
		{"string times int", `[{"id":"a","type":"transform","output":"input.name * 2"}]`,
			"$.steps[0].output", `type error in "input.name * 2": string * int`},
		{"int times double", `[{"id":"a","type":"transform","output":{"total":"input.amount * 1.5"}}]`,
			"$.steps[0].output.total", "int * double: convert with double(...) or int(...), for example double(input.amount) * 1.5"},
		{"a step's int output plus a double", `[{"id":"a","type":"transform","output":{"n":"input.amount + 1"}},
			{"id":"b","type":"transform","needs":["a"],"if":"steps.a.output.n * input.price > 10.0","output":"1"}]`,
			"$.steps[1].if", "int * double"},
		{"in a template", `[{"id":"a","type":"http","request":{"method":"GET","url":"https://x.example/{{ input.name - 1 }}"}}]`,
			"$.steps[0].request.url", "string - int"},
	}
	audits, _ := credAudit(f.owner)
	for _, tt := range tests {
		doc := defJSON(t, `{"schemaVersion":1,`+input+`,"steps":`+tt.steps+`}`)
		r := f.owner.fail("VALIDATION", mCreateVer, map[string]any{"w": wf, "d": doc})
		if msg := problemMessage(r, tt.path); !strings.Contains(msg, tt.want) {
			t.Errorf("%s: problem at %s is %q, want it to contain %q: %s", tt.name, tt.path, msg, tt.want, r.Raw)
		}
	}
	var versions int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM workflow_versions WHERE workflow_id = $1`, wf).Scan(&versions); err != nil || versions != 0 {
		t.Errorf("refused definitions wrote %d version rows (%v)", versions, err)
	}
	if n, _ := credAudit(f.owner); n != audits {
		t.Errorf("refused definitions wrote %d audit entries", n-audits)
	}

	// A draft stored before expressions were type-checked is refused at
	// publish, and stays a draft.
	draft := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": defJSON(t, `{"schemaVersion":1,`+input+`,
		"steps":[{"id":"a","type":"transform","output":"input.amount * 2"}]}`)}), "createWorkflowVersion.id")
	if _, err := ownerDB(t).Exec(`UPDATE workflow_versions SET definition = jsonb_set(definition, '{steps,0,output}', '"input.amount * 2.5"') WHERE id = $1`, draft); err != nil {
		t.Fatal(err)
	}
	r := f.owner.fail("VALIDATION", mPublish, map[string]any{"id": draft})
	if msg := problemMessage(r, "$.steps[0].output"); !strings.Contains(msg, "int * double") {
		t.Errorf("publish: %s", r.Raw)
	}
	if st := str(f.owner.ok(qDefVersion, map[string]any{"id": draft}), "node.status"); st != "draft" {
		t.Errorf("version is %s after a refused publish", st)
	}
}

// TestExpressionRuntimeErrorNamesPathAndTypes: what the checker cannot
// know (no input schema) fails at run time with the expression's path and
// the types of the values.
func TestExpressionRuntimeErrorNamesPathAndTypes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "expr-runtime")
	wf, _ := deployWorkflow(t, f, "untyped", defJSON(t, `{"schemaVersion":1,
		"steps":[{"id":"a","type":"transform","output":{"twice":"input.name * 2"}}]}`))
	id := engStart(t, f.owner, f, wf, map[string]any{"name": "ada"})
	run := engFinish(t, f.owner, id, "failed")
	msg := str(run, "error.message")
	if str(run, "error.class") != "permanent" || !strings.Contains(msg, `evaluate "input.name * 2" at $.steps[0].output.twice: no such overload (string * int)`) {
		t.Errorf("run error %v", run["error"])
	}
}

// TestExpressionTypesAcrossResumeAndReplay: a run, its resume and its
// sandbox replay produce the same output, byte for byte and type for
// type, whether a step's inputs were computed in the same transaction or
// read back from Postgres: integral values stay ints, values declared
// double stay doubles even when integral.
func TestExpressionTypesAcrossResumeAndReplay(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "expr-replay")
	srv := newScriptServer(t)
	json200 := reply{Status: 200, Headers: map[string]string{"Content-Type": "application/json"}, Body: `{"fee": 2.0, "rate": 0.25}`}
	srv.script("/x/charge", reply{Status: 400, Body: map[string]any{"error": "try later"}}, json200)
	def := defJSON(t, `{"schemaVersion":1,
		"input":{"type":"object","required":["amount","price"],"properties":{"amount":{"type":"integer"},"price":{"type":"number"}}},
		"steps":[
			{"id":"a","type":"transform","output":{"twice":"input.amount * 2","half":"input.price / 2.0","whole":"input.price * 2.0","n":3,"ratio":0.5,"list":"[1.0, 2.5]"}},
			{"id":"c","type":"transform","needs":["a"],"output":{
				"sum":"steps.a.output.twice + steps.a.output.n",
				"scaled":"steps.a.output.whole * 1.5",
				"types":"[type(steps.a.output.twice) == int, type(steps.a.output.whole) == double, type(steps.a.output.list[0]) == double, type(input.price) == double, type(input.amount) == int]"}},
			{"id":"d","type":"http","needs":["c"],"sideEffect":true,
				"request":{"method":"POST","url":"`+srv.URL+`/x/charge","body":{"sum":"{{ steps.c.output.sum }}","whole":"{{ steps.a.output.whole }}"}},
				"expect":{"schema":{"type":"object","properties":{"fee":{"type":"number"},"rate":{"type":"number"}}}}},
			{"id":"e","type":"transform","needs":["a","c","d"],"output":{
				"fee":"steps.d.output.body.fee * 1.5",
				"count":"steps.c.output.sum + 1",
				"types":"[type(steps.d.output.body.fee) == double, type(steps.c.output.scaled) == double, type(steps.c.output.sum) == int]"}}],
		"output":"{'a': steps.a.output, 'c': steps.c.output, 'e': steps.e.output}"}`)
	wf, _ := deployWorkflow(t, f, "charges", def)
	input := map[string]any{"amount": 120, "price": 3}
	const want = `{"a":{"half":1.5,"list":[1,2.5],"n":3,"ratio":0.5,"twice":240,"whole":6},` +
		`"c":{"scaled":9,"sum":243,"types":[true,true,true,true,true]},` +
		`"e":{"count":244,"fee":3,"types":[true,true,true]}}`

	// The first run fails at the charge; resumed, it reads a's and c's
	// outputs back from Postgres.
	first := engStart(t, f.owner, f, wf, input)
	if run := engFinish(t, f.owner, first, "failed"); str(run, "error.stepID") != "d" {
		t.Fatalf("first run failed at %v", run["error"])
	}
	f.owner.ok(mEngResume, map[string]any{"id": first})
	engFinish(t, f.owner, first, "succeeded")
	resumed := rawRunOutput(t, f.owner, first)

	// A fresh run computes a and c in one transaction.
	second := engStart(t, f.owner, f, wf, input)
	engFinish(t, f.owner, second, "succeeded")
	fresh := rawRunOutput(t, f.owner, second)

	// A sandbox replay gets d's recorded output and calls nothing.
	sb := str(f.owner.ok(mEngReplay, map[string]any{"id": second, "m": "SANDBOX"}), "replayRun.id")
	engFinish(t, f.owner, sb, "succeeded")
	waitQueueHandled(t, suiteRedis(t), "steps", sb)
	engCount(t, srv, "POST", "/x/charge", 3) // 400, then the resume's 200 and the second run's
	replayed := rawRunOutput(t, f.owner, sb)

	for name, got := range map[string]string{"resumed run": resumed, "fresh run": fresh, "sandbox replay": replayed} {
		if got != want {
			t.Errorf("%s output\n %s\nwant\n %s", name, got, want)
		}
	}
}

// TestUnknownStepTypeRefusedAtCreate: a step type this server does not
// know is a VALIDATION error when the version is created, never a run
// failure, and nothing is written.
func TestUnknownStepTypeRefusedAtCreate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "expr-steptype")
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "Future", "s": "future"}), "createWorkflow.id")
	r := f.owner.fail("VALIDATION", mCreateVer, map[string]any{"w": wf, "d": defJSON(t, `{"schemaVersion":1,"steps":[
		{"id":"a","type":"transform","output":"1"},
		{"id":"b","type":"teleport","needs":["a"],"items":"[1, 2]"}]}`)})
	if msg := problemMessage(r, "$.steps[1].type"); msg == "" || !strings.Contains(msg, "transform") {
		t.Errorf("want a problem at $.steps[1].type naming the known types, got %s", r.Raw)
	}
	var versions int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM workflow_versions WHERE workflow_id = $1`, wf).Scan(&versions); err != nil || versions != 0 {
		t.Errorf("refused definition wrote %d version rows (%v)", versions, err)
	}
}
