package steps_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/steps"
)

// modelScript is a loopback model API: each request takes the next
// scripted answer (the last one repeats) and is recorded.
type modelScript struct {
	mu       sync.Mutex
	answers  []scripted
	requests []modelRequest
	url      string
}

type scripted struct {
	status int
	body   any
}

type modelRequest struct {
	path, key string
	body      map[string]any
}

func newModelScript(t *testing.T, answers ...scripted) *modelScript {
	m := &modelScript{answers: answers}
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		m.mu.Lock()
		m.requests = append(m.requests, modelRequest{path: r.URL.Path, key: r.Header.Get("Idempotency-Key"), body: body})
		a := m.answers[0]
		if len(m.answers) > 1 {
			m.answers = m.answers[1:]
		}
		m.mu.Unlock()
		writeJSON(w, a.status, a.body)
	})
	m.url = srv.URL
	return m
}

func (m *modelScript) got() []modelRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]modelRequest(nil), m.requests...)
}

func openAIReply(content string) scripted {
	return scripted{200, map[string]any{
		"model":   "gpt-4o-2024-08-06",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": content}}},
		"usage":   map[string]any{"prompt_tokens": 100, "completion_tokens": 10},
	}}
}

func anthropicToolReply(id string, input any) scripted {
	return scripted{200, map[string]any{
		"model": "claude-test", "stop_reason": "tool_use",
		"content": []any{map[string]any{"type": "tool_use", "id": id, "name": "classify", "input": input}},
		"usage":   map[string]any{"input_tokens": 200, "output_tokens": 20},
	}}
}

func unavailable() scripted {
	return scripted{503, map[string]any{"error": map[string]any{"message": "overloaded"}}}
}

const labelSchema = `{"type":"object","required":["label","priority"],"additionalProperties":false,
	"properties":{"label":{"type":"string","enum":["urgent","normal"]},"priority":{"type":"integer"}}}`

func structuredStep(t *testing.T, extra string) *definition.Step {
	return step(t, `{"id":"classify","type":"llm","model":"gpt-4o","maxTokens":300,"credential":"primary",
		"messages":[{"role":"user","content":"Classify: {{ steps.fetch.output.body.subject }}"}],
		"outputSchema":`+labelSchema+extra+`}`)
}

func openAICred(url string) *steps.Credential {
	return &steps.Credential{Type: "openai", Secret: map[string]any{"apiKey": "sk-test-primary", "baseURL": url + "/v1"}}
}

func anthropicCred(url string) *steps.Credential {
	return &steps.Credential{Type: "anthropic", Secret: map[string]any{"apiKey": "sk-ant-fallback", "baseURL": url}}
}

// TestLLMStructuredOpenAI: the outputSchema goes out as a strict
// json_schema response format; a reply that is not JSON is sent back
// once with what is wrong, and the corrected reply is parsed into json.
func TestLLMStructuredOpenAI(t *testing.T) {
	ai := newModelScript(t, openAIReply("Sure! The label is urgent."), openAIReply(`{"label":"urgent","priority":2}`))
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Attempt: 1, Step: structuredStep(t, ""), Env: llmEnv, Credential: openAICred(ai.url),
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := ai.got()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	rf, _ := json.Marshal(reqs[0].body["response_format"])
	var want any
	json.Unmarshal([]byte(`{"type":"json_schema","json_schema":{"name":"classify","strict":true,"schema":`+labelSchema+`}}`), &want)
	wantRF, _ := json.Marshal(want)
	if string(rf) != string(wantRF) || reqs[0].body["max_completion_tokens"] != float64(300) {
		t.Errorf("first request: response_format %s (want %s), max_completion_tokens %v", rf, wantRF, reqs[0].body["max_completion_tokens"])
	}
	msgs := reqs[1].body["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("correction messages = %v", msgs)
	}
	said, told := msgs[1].(map[string]any), msgs[2].(map[string]any)
	if said["role"] != "assistant" || said["content"] != "Sure! The label is urgent." || told["role"] != "user" ||
		!strings.Contains(told["content"].(string), "the reply is not valid JSON") || reqs[1].body["response_format"] == nil {
		t.Errorf("correction turn: %v / %v", said, told)
	}
	if reqs[0].key == "" || reqs[1].key == reqs[0].key {
		t.Errorf("idempotency keys %q then %q: the correction differs from the first request", reqs[0].key, reqs[1].key)
	}
	out := res.Output
	js, _ := out["json"].(map[string]any)
	if js["label"] != "urgent" || js["priority"] != int64(2) || out["text"] != `{"label":"urgent","priority":2}` {
		t.Errorf("output = %#v", out)
	}
	if u := out["usage"].(map[string]any); u["inputTokens"] != int64(200) || u["outputTokens"] != int64(20) {
		t.Errorf("usage = %v, want both calls counted", u)
	}
	if len(res.Calls) != 2 || !strings.Contains(res.Calls[0].Error, "does not match outputSchema") || res.Calls[1].Error != "" {
		t.Errorf("calls = %+v", res.Calls)
	}
}

// TestLLMStructuredAnthropic: the outputSchema is a tool the model must
// call; a tool input that breaks the schema is answered with a tool_result
// error naming the problem, and the corrected input is the output's json.
func TestLLMStructuredAnthropic(t *testing.T) {
	ai := newModelScript(t,
		anthropicToolReply("toolu_1", map[string]any{"label": "whenever", "priority": 2}),
		anthropicToolReply("toolu_2", map[string]any{"label": "normal", "priority": 5}))
	s := structuredStep(t, `,"temperature":0.5,"seed":3`)
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Attempt: 1, Step: s, Env: llmEnv, Credential: anthropicCred(ai.url),
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := ai.got()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	first := reqs[0].body
	tools, _ := first["tools"].([]any)
	tc, _ := json.Marshal(first["tool_choice"])
	if len(tools) != 1 || tools[0].(map[string]any)["name"] != "classify" || tools[0].(map[string]any)["input_schema"] == nil ||
		string(tc) != `{"name":"classify","type":"tool"}` || first["temperature"] != 0.5 {
		t.Errorf("first request: tools %v tool_choice %s temperature %v", tools, tc, first["temperature"])
	}
	if _, ok := first["seed"]; ok {
		t.Errorf("seed sent to anthropic: %v", first)
	}
	msgs := reqs[1].body["messages"].([]any)
	if len(msgs) != 3 {
		t.Fatalf("correction messages = %v", msgs)
	}
	said, _ := json.Marshal(msgs[1])
	told, _ := json.Marshal(msgs[2])
	if !strings.Contains(string(said), `"role":"assistant"`) || !strings.Contains(string(said), `"tool_use"`) ||
		!strings.Contains(string(told), `"tool_use_id":"toolu_1"`) || !strings.Contains(string(told), `"is_error":true`) ||
		!strings.Contains(string(told), "$.label") {
		t.Errorf("correction turn: %s / %s", said, told)
	}
	js, _ := res.Output["json"].(map[string]any)
	if js["label"] != "normal" || js["priority"] != int64(5) || res.Output["finishReason"] != "tool_use" {
		t.Errorf("output = %#v", res.Output)
	}
}

// TestLLMSchemaDrift: a second invalid reply fails with schema_drift,
// naming the problem; both calls are recorded.
func TestLLMSchemaDrift(t *testing.T) {
	ai := newModelScript(t, openAIReply(`{"label":"urgent"}`), openAIReply(`{"label":"urgent","priority":"high"}`))
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Attempt: 1, Step: structuredStep(t, ""), Env: llmEnv, Credential: openAICred(ai.url),
	})
	e := stepError(t, err)
	if e.Class != steps.SchemaDrift || !strings.Contains(e.Message, "after a correction") || !strings.Contains(e.Message, "$.priority") {
		t.Errorf("error = %+v", e)
	}
	if len(ai.got()) != 2 || res == nil || len(res.Calls) != 2 || res.Output != nil {
		t.Fatalf("requests %d, result %+v", len(ai.got()), res)
	}
	if !strings.Contains(ai.got()[1].body["messages"].([]any)[2].(map[string]any)["content"].(string), "$.priority") {
		t.Errorf("the correction does not name the missing field: %v", ai.got()[1].body["messages"])
	}
}

// TestLLMFallback: the primary model answering 503 moves on to the next
// model, another provider and credential; both calls are in the result.
func TestLLMFallback(t *testing.T) {
	primary := newModelScript(t, unavailable())
	backup := newModelScript(t, anthropicToolReply("toolu_1", map[string]any{"label": "urgent", "priority": 1}))
	s := structuredStep(t, `,"fallbacks":[{"credential":"backup","model":"claude-test"}]`)
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Attempt: 1, Step: s, Env: llmEnv, Credential: openAICred(primary.url),
		Fallbacks: []steps.Fallback{{Name: "backup", Credential: anthropicCred(backup.url), Model: "claude-test"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(primary.got()) != 1 || len(backup.got()) != 1 {
		t.Fatalf("primary got %d, backup %d requests", len(primary.got()), len(backup.got()))
	}
	if primary.got()[0].key == backup.got()[0].key {
		t.Error("the fallback call carries the primary call's Idempotency-Key")
	}
	if len(res.Calls) != 2 || res.Calls[0].StatusCode != 503 || res.Calls[0].Model != "gpt-4o" || res.Calls[0].Error == "" ||
		res.Calls[1].Provider != "anthropic" || res.Calls[1].Model != "claude-test" || res.Calls[1].InputTokens != 200 {
		t.Errorf("calls = %+v", res.Calls)
	}
	if res.Output["model"] != "claude-test" || res.Output["json"].(map[string]any)["label"] != "urgent" {
		t.Errorf("output = %v", res.Output)
	}
	for _, c := range res.Calls {
		if strings.Contains(c.RequestBody+c.ResponseBody+c.Error, "sk-test-primary") || strings.Contains(c.RequestBody+c.ResponseBody, "sk-ant-fallback") {
			t.Errorf("a key was recorded: %+v", c)
		}
	}
}

// TestLLMFallbackRules: which failures move on to the next model.
func TestLLMFallbackRules(t *testing.T) {
	textStep := func(extra string) *definition.Step {
		return step(t, `{"id":"draft","type":"llm","model":"gpt-4o","credential":"primary","messages":[{"role":"user","content":"hi"}],
			"fallbacks":[{"credential":"backup","model":"gpt-4o-mini"}]`+extra+`}`)
	}
	run := func(t *testing.T, s *definition.Step, attempt int, primary, backup []scripted, hook func(context.Context, steps.PlannedCall) error) (*steps.Result, error, int, int) {
		t.Helper()
		p, b := newModelScript(t, primary...), newModelScript(t, backup...)
		res, err := newExecutor().LLM(context.Background(), steps.Request{
			RunID: "run_1", StepID: "draft", Attempt: attempt, Step: s, Env: llmEnv, Credential: openAICred(p.url),
			Fallbacks:       []steps.Fallback{{Name: "backup", Credential: openAICred(b.url), Model: "gpt-4o-mini"}},
			BeforeModelCall: hook,
		})
		return res, err, len(p.got()), len(b.got())
	}
	ok := []scripted{openAIReply("fine")}

	t.Run("permanent error does not fall back", func(t *testing.T) {
		_, err, p, b := run(t, textStep(""), 1, []scripted{{400, map[string]any{"error": map[string]any{"message": "bad request"}}}}, ok, nil)
		if e := stepError(t, err); e.Class != steps.Permanent || p != 1 || b != 0 {
			t.Errorf("error %+v, primary %d, backup %d", e, p, b)
		}
	})
	t.Run("429 before the last attempt retries the same model", func(t *testing.T) {
		_, err, p, b := run(t, textStep(""), 1, []scripted{{429, map[string]any{"error": map[string]any{"message": "slow down"}}}}, ok, nil)
		if e := stepError(t, err); e.Class != steps.Transient || e.StatusCode != 429 || p != 1 || b != 0 {
			t.Errorf("error %+v, primary %d, backup %d", e, p, b)
		}
	})
	t.Run("429 on the last attempt falls back", func(t *testing.T) {
		res, err, p, b := run(t, textStep(`,"retry":{"maxAttempts":2}`), 2, []scripted{{429, map[string]any{"error": map[string]any{"message": "slow down"}}}}, ok, nil)
		if err != nil || p != 1 || b != 1 || res.Output["text"] != "fine" {
			t.Errorf("err %v, primary %d, backup %d", err, p, b)
		}
	})
	t.Run("every model down", func(t *testing.T) {
		res, err, p, b := run(t, textStep(""), 1, []scripted{unavailable()}, []scripted{unavailable()}, nil)
		e := stepError(t, err)
		if e.Class != steps.Transient || p != 1 || b != 1 || len(res.Calls) != 2 ||
			!strings.Contains(e.Message, "gpt-4o: status 503") || !strings.Contains(e.Message, "then fallbacks[0] gpt-4o-mini: status 503") {
			t.Errorf("error %+v, primary %d, backup %d", e, p, b)
		}
	})
	t.Run("a refused call is not made", func(t *testing.T) {
		var plans []steps.PlannedCall
		hook := func(_ context.Context, next steps.PlannedCall) error {
			plans = append(plans, next)
			if len(next.Made) > 0 {
				return &steps.Error{Class: steps.Budget, Message: "over budget"}
			}
			return nil
		}
		res, err, p, b := run(t, textStep(""), 1, []scripted{unavailable()}, ok, hook)
		e := stepError(t, err)
		if e.Class != steps.Budget || p != 1 || b != 0 || len(res.Calls) != 1 {
			t.Errorf("error %+v, primary %d, backup %d", e, p, b)
		}
		if len(plans) != 2 || plans[1].Model != "gpt-4o-mini" || plans[1].Provider != "openai" || plans[1].RequestBytes == 0 || plans[1].Made[0].StatusCode != 503 {
			t.Errorf("planned calls = %+v", plans)
		}
	})
	t.Run("a fallback credential missing from the environment", func(t *testing.T) {
		p := newModelScript(t, unavailable())
		_, err := newExecutor().LLM(context.Background(), steps.Request{
			RunID: "run_1", StepID: "draft", Attempt: 1, Step: textStep(""), Env: llmEnv, Credential: openAICred(p.url),
			Fallbacks: []steps.Fallback{{Name: "backup", Model: "gpt-4o-mini"}},
		})
		if e := stepError(t, err); e.Class != steps.Permanent || !strings.Contains(e.Message, `credential "backup" is missing`) || !strings.Contains(e.Message, "status 503") {
			t.Errorf("error %+v", e)
		}
	})
	t.Run("at_most_once: no fallback once the call may have been sent", func(t *testing.T) {
		s := textStep(`,"sideEffect":true,"delivery":"at_most_once"`)
		p, b := newModelScript(t, unavailable()), newModelScript(t, ok...)
		marks := 0
		_, err := newExecutor().LLM(context.Background(), steps.Request{
			RunID: "run_1", StepID: "draft", Attempt: 1, Step: s, Env: llmEnv, Credential: openAICred(p.url),
			Fallbacks:  []steps.Fallback{{Name: "backup", Credential: openAICred(b.url), Model: "gpt-4o-mini"}},
			BeforeSend: func(context.Context) error { marks++; return nil },
		})
		if e := stepError(t, err); e.Class != steps.Transient || len(p.got()) != 1 || len(b.got()) != 0 || marks != 1 {
			t.Errorf("error %+v, primary %d, backup %d, sends recorded %d", e, len(p.got()), len(b.got()), marks)
		}
	})
	t.Run("at_most_once: an invalid reply is not corrected", func(t *testing.T) {
		s := structuredStep(t, `,"sideEffect":true,"delivery":"at_most_once"`)
		p := newModelScript(t, openAIReply("no"), openAIReply(`{"label":"urgent","priority":1}`))
		_, err := newExecutor().LLM(context.Background(), steps.Request{
			RunID: "run_1", StepID: "classify", Attempt: 1, Step: s, Env: llmEnv, Credential: openAICred(p.url),
			BeforeSend: func(context.Context) error { return nil },
		})
		if e := stepError(t, err); e.Class != steps.SchemaDrift || len(p.got()) != 1 {
			t.Errorf("error %+v, requests %d", e, len(p.got()))
		}
	})
}
