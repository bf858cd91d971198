package e2e

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

const (
	openAIPath    = "/v1/chat/completions"
	anthropicPath = "/v1/messages"
	qLLMRun       = `query($id: ID!) { node(id: $id) { ... on Run { status output costMicroUSD error { class message stepID }
		steps { stepID status attempts output error { class message }
			calls { provider model statusCode costMicroUSD priced error } } } } }`
	qRunModelCalls = `query($r: String!) { modelCalls(where: {runID: $r}) { totalCount edges { node { provider model costMicroUSD } } } }`
)

// ticketSchema is the outputSchema of the classify steps below.
var ticketSchema = map[string]any{
	"type": "object", "required": []any{"label", "priority"}, "additionalProperties": false,
	"properties": map[string]any{
		"label":    map[string]any{"type": "string", "enum": []any{"urgent", "normal"}},
		"priority": map[string]any{"type": "integer"},
	},
}

// classifyDefinition asks a model for a label and a priority as JSON and
// routes on them; extra is merged into the llm step.
func classifyDefinition(extra map[string]any) map[string]any {
	classify := map[string]any{"id": "classify", "type": "llm", "credential": "model", "model": "gpt-4o", "maxTokens": 300,
		"messages":     []any{map[string]any{"role": "user", "content": "Classify: {{ input.subject }}"}},
		"outputSchema": ticketSchema}
	for k, v := range extra {
		classify[k] = v
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "required": []any{"subject"}, "properties": map[string]any{"subject": map[string]any{"type": "string"}}},
		"steps": []any{classify,
			map[string]any{"id": "route", "type": "transform", "needs": []any{"classify"},
				"output": map[string]any{"queue": "steps.classify.output.json.label", "priority": "steps.classify.output.json.priority"}}},
		"output": "steps.route.output",
	}
}

func openAIAnswer(content string) reply {
	return reply{Status: 200, Body: map[string]any{
		"id": "chatcmpl-test", "object": "chat.completion", "model": "gpt-4o",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": content}}},
		"usage":   map[string]any{"prompt_tokens": 400, "completion_tokens": 20},
	}}
}

func anthropicToolAnswer(id string, input map[string]any) reply {
	return reply{Status: 200, Body: map[string]any{
		"id": "msg_test", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "stop_reason": "tool_use",
		"content": []any{map[string]any{"type": "tool_use", "id": id, "name": "classify", "input": input}},
		"usage":   map[string]any{"input_tokens": 500, "output_tokens": 30},
	}}
}

func requestBody(t *testing.T, r recorded) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("request body: %v: %s", err, r.Body)
	}
	return m
}

// startLLMRun deploys def with a credential named "model" of type typ
// aimed at srv, starts a run and waits for it to end.
func startLLMRun(t *testing.T, f *fixture, slug, typ string, baseURL string, def map[string]any) map[string]any {
	t.Helper()
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "model", "t": typ, "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": baseURL}})
	wf, _ := deployWorkflow(t, f, slug, def)
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"subject": "Printer on fire"}}), "startRun.id")
	waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed")
	run, _ := get(f.owner.ok(qLLMRun, map[string]any{"id": id}), "node").(map[string]any)
	run["id"] = id
	return run
}

// TestLLMStructuredOutputOpenAI: an OpenAI-compatible model asked for
// structured output gets the schema as a strict json_schema response
// format and the step's sampling parameters; its first reply is not JSON,
// so the step sends the problem back once; the corrected reply is parsed
// into output.json, which the next step reads.
func TestLLMStructuredOutputOpenAI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "llm-json")
	ai := newScriptServer(t)
	ai.script(openAIPath, openAIAnswer("The ticket is urgent."), openAIAnswer(`{"label":"urgent","priority":2}`))
	run := startLLMRun(t, f, "classify", "openai", ai.URL+"/v1", classifyDefinition(map[string]any{
		"temperature": 0.2, "topP": 0.9, "stop": "END", "seed": 7}))

	if run["status"] != "succeeded" || !reflect.DeepEqual(run["output"], map[string]any{"queue": "urgent", "priority": float64(2)}) {
		t.Fatalf("run: %v", run)
	}
	step := stepOf(run, "classify")
	if js := get(step, "output.json"); !reflect.DeepEqual(js, map[string]any{"label": "urgent", "priority": float64(2)}) || get(step, "attempts") != float64(1) {
		t.Errorf("classify step: %v", step)
	}
	calls, _ := step["calls"].([]any)
	if len(calls) != 2 || !strings.Contains(str(calls[0], "error"), "does not match outputSchema") ||
		get(calls[1], "priced") != true || get(calls[1], "costMicroUSD").(float64) <= 0 {
		t.Errorf("calls: %v", calls)
	}

	reqs := ai.calls(openAIPath)
	if len(reqs) != 2 {
		t.Fatalf("the model got %d requests, want 2", len(reqs))
	}
	first := requestBody(t, reqs[0])
	wantFormat := map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "classify", "strict": true, "schema": ticketSchema}}
	if got, _ := json.Marshal(first["response_format"]); string(got) != mustJSON(t, wantFormat) {
		t.Errorf("response_format = %s\nwant %s", got, mustJSON(t, wantFormat))
	}
	if _, ok := first["max_tokens"]; ok || first["max_completion_tokens"] != float64(300) || first["temperature"] != 0.2 || first["top_p"] != 0.9 ||
		!reflect.DeepEqual(first["stop"], []any{"END"}) || first["seed"] != float64(7) {
		t.Errorf("first request: %v", first)
	}
	msgs, _ := requestBody(t, reqs[1])["messages"].([]any)
	if len(msgs) != 3 || str(msgs[1], "role") != "assistant" || str(msgs[1], "content") != "The ticket is urgent." ||
		str(msgs[2], "role") != "user" || !strings.Contains(str(msgs[2], "content"), "the reply is not valid JSON") {
		t.Errorf("the correction request's messages: %v", msgs)
	}
}

// TestLLMStructuredOutputAnthropic: an Anthropic model gets the schema as a
// tool it must call; a tool input breaking the schema is answered with a
// tool_result error naming the field, and the corrected input is the
// step's output.json. Anthropic has no seed, so none is sent.
func TestLLMStructuredOutputAnthropic(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "llm-tool")
	ai := newScriptServer(t)
	ai.script(anthropicPath,
		anthropicToolAnswer("toolu_1", map[string]any{"label": "soon", "priority": 1}),
		anthropicToolAnswer("toolu_2", map[string]any{"label": "normal", "priority": 3}))
	run := startLLMRun(t, f, "classify", "anthropic", ai.URL, classifyDefinition(map[string]any{
		"model": "claude-haiku-4-5", "temperature": 0.5, "topP": 0.8, "stop": []any{"END", "STOP"}, "seed": 7}))

	if run["status"] != "succeeded" || !reflect.DeepEqual(run["output"], map[string]any{"queue": "normal", "priority": float64(3)}) {
		t.Fatalf("run: %v", run)
	}
	reqs := ai.calls(anthropicPath)
	if len(reqs) != 2 {
		t.Fatalf("the model got %d requests, want 2", len(reqs))
	}
	first := requestBody(t, reqs[0])
	tools, _ := first["tools"].([]any)
	if len(tools) != 1 || str(tools[0], "name") != "classify" || !reflect.DeepEqual(get(tools[0], "input_schema"), defRoundTrip(t, ticketSchema)) ||
		!reflect.DeepEqual(first["tool_choice"], map[string]any{"type": "tool", "name": "classify"}) {
		t.Errorf("tools %v, tool_choice %v", tools, first["tool_choice"])
	}
	if _, ok := first["seed"]; ok || first["temperature"] != 0.5 || first["top_p"] != 0.8 || !reflect.DeepEqual(first["stop_sequences"], []any{"END", "STOP"}) ||
		first["max_tokens"] != float64(300) {
		t.Errorf("first request: %v", first)
	}
	msgs, _ := requestBody(t, reqs[1])["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("the correction request's messages: %v", msgs)
	}
	answer, _ := json.Marshal(msgs[2])
	if str(msgs[1], "role") != "assistant" || str(msgs[2], "role") != "user" || !strings.Contains(string(answer), `"tool_use_id":"toolu_1"`) ||
		!strings.Contains(string(answer), `"is_error":true`) || !strings.Contains(string(answer), "$.label") {
		t.Errorf("the correction turn: %v / %s", msgs[1], answer)
	}
}

// TestLLMSchemaDrift: two replies that break the outputSchema fail the
// step at once with class schema_drift (no retry), both calls traced.
func TestLLMSchemaDrift(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "llm-drift")
	ai := newScriptServer(t)
	ai.script(openAIPath, openAIAnswer(`{"label":"urgent"}`), openAIAnswer(`{"label":"urgent","priority":"high"}`))
	run := startLLMRun(t, f, "classify", "openai", ai.URL+"/v1", classifyDefinition(nil))

	if run["status"] != "failed" || str(run, "error.class") != "schema_drift" || str(run, "error.stepID") != "classify" ||
		!strings.Contains(str(run, "error.message"), "$.priority") {
		t.Fatalf("run: %v", run)
	}
	step := stepOf(run, "classify")
	if get(step, "attempts") != float64(1) || len(step["calls"].([]any)) != 2 {
		t.Errorf("classify step: %v", step)
	}
	if n := len(ai.calls(openAIPath)); n != 2 {
		t.Errorf("the model got %d requests, want 2", n)
	}
}

// TestLLMFallback: the step's model answering 503 falls back, in the same
// attempt, to its fallback on another provider; both calls are in the
// trace and recorded as model calls, the failed one priced at zero.
func TestLLMFallback(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "llm-fallback")
	down, backup := newScriptServer(t), newScriptServer(t)
	down.script(openAIPath, reply{Status: 503, Body: map[string]any{"error": map[string]any{"message": "overloaded"}}})
	backup.script(anthropicPath, anthropicToolAnswer("toolu_1", map[string]any{"label": "urgent", "priority": 1}))
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "claude", "t": "anthropic", "s": map[string]any{"apiKey": "sk-ant-" + randHex(8), "baseURL": backup.URL}})
	run := startLLMRun(t, f, "classify", "openai", down.URL+"/v1", classifyDefinition(map[string]any{
		"fallbacks": []any{map[string]any{"credential": "claude", "model": "claude-haiku-4-5"}}}))

	if run["status"] != "succeeded" || get(run, "output.queue") != "urgent" {
		t.Fatalf("run: %v", run)
	}
	step := stepOf(run, "classify")
	calls, _ := step["calls"].([]any)
	if get(step, "attempts") != float64(1) || len(calls) != 2 {
		t.Fatalf("classify step: %v", step)
	}
	if str(calls[0], "provider") != "openai" || str(calls[0], "model") != "gpt-4o" || get(calls[0], "statusCode") != float64(503) ||
		get(calls[0], "costMicroUSD") != float64(0) || get(calls[0], "priced") != true || str(calls[0], "error") == "" {
		t.Errorf("first call: %v", calls[0])
	}
	// claude-haiku-4-5: 1 USD/MTok in, 5 USD/MTok out.
	want := float64(500*1 + 30*5)
	if str(calls[1], "provider") != "anthropic" || str(calls[1], "model") != "claude-haiku-4-5" || get(calls[1], "costMicroUSD") != want || get(run, "costMicroUSD") != want {
		t.Errorf("second call: %v (run cost %v, want %v)", calls[1], get(run, "costMicroUSD"), want)
	}
	mc := f.owner.ok(qRunModelCalls, map[string]any{"r": run["id"]})
	if get(mc, "modelCalls.totalCount") != float64(2) {
		t.Fatalf("model calls: %v", mc)
	}
	var models []string
	for _, e := range edges(mc, "modelCalls") {
		models = append(models, str(e, "model"))
	}
	if !strings.Contains(strings.Join(models, ","), "gpt-4o") || !strings.Contains(strings.Join(models, ","), "claude-haiku-4-5") {
		t.Errorf("model calls: %v", models)
	}
	if len(down.calls(openAIPath)) != 1 || len(backup.calls(anthropicPath)) != 1 {
		t.Errorf("requests: primary %d, fallback %d", len(down.calls(openAIPath)), len(backup.calls(anthropicPath)))
	}
}

// TestLLMOptionsRefused: bad outputSchemas and fallbacks are refused at
// create with VALIDATION at their path, and a fallback credential missing
// from the environment at deploy; nothing is written.
func TestLLMOptionsRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "llm-bad")
	wfID := str(f.owner.ok(mCreateWF, map[string]any{"n": "Bad llm", "s": "bad-llm"}), "createWorkflow.id")
	const llm = `{"id":"a","type":"llm","credential":"model","model":"gpt-4o","messages":[{"role":"user","content":"hi"}]`
	tests := []struct{ name, doc, path string }{
		{"outputSchema that does not compile", defSteps(llm + `,"outputSchema":{"type":"object","properties":{"x":{"type":"strnig"}}}}`), "$.steps[0].outputSchema"},
		{"outputSchema not an object", defSteps(llm + `,"outputSchema":{"type":"array"}}`), "$.steps[0].outputSchema"},
		{"more than 3 fallbacks", defSteps(llm + `,"fallbacks":[{"credential":"c","model":"m1"},{"credential":"c","model":"m2"},{"credential":"c","model":"m3"},{"credential":"c","model":"m4"}]}`), "$.steps[0].fallbacks"},
		{"fallback without model", defSteps(llm + `,"fallbacks":[{"credential":"c"}]}`), "$.steps[0].fallbacks[0].model"},
		{"fallback without credential", defSteps(llm + `,"fallbacks":[{"credential":"c","model":"m1"},{"model":"m2"}]}`), "$.steps[0].fallbacks[1].credential"},
		{"topP out of range", defSteps(llm + `,"topP":2}`), "$.steps[0].topP"},
		{"stop of the wrong type", defSteps(llm + `,"stop":{"a":1}}`), "$.steps[0].stop"},
		{"seed not an integer", defSteps(llm + `,"seed":"7"}`), "$.steps[0].seed"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newClient(t, i, f.owner.token).fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, tt.doc)})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
		})
	}
	d := f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"id": wfID})
	if n := get(d, "node.versions.totalCount"); n != float64(0) {
		t.Errorf("refused definitions created %v versions", n)
	}

	t.Run("fallback credential missing at deploy", func(t *testing.T) {
		f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "model", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8)}})
		v := str(f.owner.ok(mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, defSteps(llm+`,"fallbacks":[{"credential":"model","model":"gpt-4o-mini"},{"credential":"ghost","model":"m"}]}`))}), "createWorkflowVersion.id")
		f.owner.ok(mPublish, map[string]any{"id": v})
		r := f.owner.fail("VALIDATION", mDeploy, map[string]any{"v": v, "e": f.envID})
		if !hasProblemAt(r, "$.steps[0].fallbacks[1].credential") || hasProblemAt(r, "$.steps[0].fallbacks[0].credential") {
			t.Errorf("want a problem at $.steps[0].fallbacks[1].credential only, got %s", r.Raw)
		}
		d := f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { deployments { totalCount } } } }`, map[string]any{"id": wfID})
		if n := get(d, "node.deployments.totalCount"); n != float64(0) {
			t.Errorf("a refused deploy wrote %v deployments", n)
		}
	})
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
