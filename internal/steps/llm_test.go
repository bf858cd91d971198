package steps_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/steps"
)

var llmEnv = definition.Env{Steps: map[string]any{"fetch": map[string]any{"output": map[string]any{"body": map[string]any{"subject": "Printer on fire"}}}}}

func llmStep(t *testing.T) *definition.Step {
	return step(t, `{"id":"classify","type":"llm","model":"gpt-4o-mini","maxTokens":200,"temperature":0.2,"topP":0.9,"stop":["END","STOP"],"seed":7,
		"system":"You label tickets.",
		"messages":[{"role":"user","content":"Classify: {{ steps.fetch.output.body.subject }}"}]}`)
}

func TestLLMOpenAI(t *testing.T) {
	var got map[string]any
	var gotAuth, gotPath, gotKey, gotOrg string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath, gotKey, gotOrg = r.Header.Get("Authorization"), r.URL.Path, r.Header.Get("Idempotency-Key"), r.Header.Get("OpenAI-Organization")
		json.NewDecoder(r.Body).Decode(&got)
		writeJSON(w, 200, map[string]any{
			"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": "urgent"}}},
			"usage": map[string]any{"prompt_tokens": 42, "completion_tokens": 3, "total_tokens": 45,
				"prompt_tokens_details": map[string]any{"cached_tokens": 10}},
		})
	})
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Step: llmStep(t), Env: llmEnv,
		Credential: &steps.Credential{Type: "openai", Secret: map[string]any{"apiKey": "sk-test-abcdef", "baseURL": srv.URL + "/v1/", "organization": "org-1"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer sk-test-abcdef" || gotPath != "/v1/chat/completions" || gotKey == "" || gotOrg != "org-1" {
		t.Errorf("auth %q path %q key %q org %q", gotAuth, gotPath, gotKey, gotOrg)
	}
	wantBody := `{"max_completion_tokens":200,"messages":[{"content":"You label tickets.","role":"system"},{"content":"Classify: Printer on fire","role":"user"}],"model":"gpt-4o-mini","seed":7,"stop":["END","STOP"],"temperature":0.2,"top_p":0.9}`
	if b, _ := json.Marshal(got); string(b) != wantBody {
		t.Errorf("request body = %s\nwant %s", b, wantBody)
	}
	out := res.Output
	usage := out["usage"].(map[string]any)
	if out["text"] != "urgent" || out["finishReason"] != "stop" || out["model"] != "gpt-4o-mini-2024-07-18" ||
		usage["inputTokens"] != int64(42) || usage["outputTokens"] != int64(3) || usage["cachedInputTokens"] != int64(10) {
		t.Errorf("output = %v", out)
	}
	c := res.Calls[0]
	if c.Kind != "llm" || c.Provider != "openai" || c.Model != "gpt-4o-mini-2024-07-18" || c.InputTokens != 42 ||
		c.OutputTokens != 3 || c.CachedInputTokens != 10 || c.StatusCode != 200 || c.Method != "POST" {
		t.Errorf("call = %+v", c)
	}
	if strings.Contains(c.RequestBody+c.ResponseBody+c.URL, "sk-test-abcdef") {
		t.Errorf("api key recorded: %+v", c)
	}
}

func TestLLMAnthropic(t *testing.T) {
	var got map[string]any
	var gotKey, gotVersion, gotPath, gotIdem string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		gotKey, gotVersion, gotPath, gotIdem = r.Header.Get("X-Api-Key"), r.Header.Get("Anthropic-Version"), r.URL.Path, r.Header.Get("Idempotency-Key")
		json.NewDecoder(r.Body).Decode(&got)
		writeJSON(w, 200, map[string]any{
			"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
			"content":     []any{map[string]any{"type": "text", "text": "urg"}, map[string]any{"type": "text", "text": "ent"}},
			"stop_reason": "end_turn",
			"usage":       map[string]any{"input_tokens": 30, "output_tokens": 4, "cache_read_input_tokens": 12},
		})
	})
	s := step(t, `{"id":"classify","type":"llm","model":"claude-test","system":"You label tickets.","temperature":0.3,"topP":0.8,"stop":"END","seed":7,
		"messages":[{"role":"system","content":"Be terse."},{"role":"user","content":"Classify: {{ steps.fetch.output.body.subject }}"}]}`)
	res, err := newExecutor().LLM(context.Background(), steps.Request{
		RunID: "run_1", StepID: "classify", Step: s, Env: llmEnv,
		Credential: &steps.Credential{Type: "anthropic", Secret: map[string]any{"apiKey": "sk-ant-test-1234", "baseURL": srv.URL}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotKey != "sk-ant-test-1234" || gotVersion != "2023-06-01" || gotPath != "/v1/messages" || gotIdem == "" {
		t.Errorf("key %q version %q path %q idempotency %q", gotKey, gotVersion, gotPath, gotIdem)
	}
	// Anthropic has no seed: it is not sent.
	wantBody := `{"max_tokens":1024,"messages":[{"content":"Classify: Printer on fire","role":"user"}],"model":"claude-test","stop_sequences":["END"],"system":"You label tickets.\n\nBe terse.","temperature":0.3,"top_p":0.8}`
	if b, _ := json.Marshal(got); string(b) != wantBody {
		t.Errorf("request body = %s\nwant %s", b, wantBody)
	}
	usage := res.Output["usage"].(map[string]any)
	if res.Output["text"] != "urgent" || res.Output["finishReason"] != "end_turn" ||
		usage["inputTokens"] != int64(42) || usage["outputTokens"] != int64(4) || usage["cachedInputTokens"] != int64(12) {
		t.Errorf("output = %v", res.Output)
	}
	if c := res.Calls[0]; c.Provider != "anthropic" || c.Model != "claude-test" || c.InputTokens != 42 || c.CachedInputTokens != 12 {
		t.Errorf("call = %+v", c)
	}
}

func TestLLMFailures(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/limited/chat/completions":
			w.Header().Set("Retry-After", "7")
			writeJSON(w, 429, map[string]any{"error": map[string]any{"message": "Rate limit reached for sk-test-abcdef"}})
		case "/drift/chat/completions":
			writeJSON(w, 200, map[string]any{"object": "chat.completion", "choices": []any{}})
		case "/html/chat/completions":
			w.Write([]byte("<html>maintenance</html>"))
		}
	})
	run := func(cred *steps.Credential) *steps.Error {
		t.Helper()
		_, err := newExecutor().LLM(context.Background(), steps.Request{Step: llmStep(t), Env: llmEnv, Credential: cred})
		return stepError(t, err)
	}
	openai := func(path string) *steps.Credential {
		return &steps.Credential{Type: "openai", Secret: map[string]any{"apiKey": "sk-test-abcdef", "baseURL": srv.URL + path}}
	}

	if e := run(nil); e.Class != steps.Permanent || e.Message != "llm step needs an openai or anthropic credential" {
		t.Errorf("no credential: %+v", e)
	}
	if e := run(&steps.Credential{Type: "bearer", Secret: map[string]any{"token": "x"}}); e.Class != steps.Permanent {
		t.Errorf("bearer credential: %+v", e)
	}
	e := run(openai("/limited"))
	if e.Class != steps.Transient || e.RetryAfter.Seconds() != 7 || e.StatusCode != 429 || !strings.Contains(e.Message, "Rate limit reached") {
		t.Errorf("429: %+v", e)
	}
	if strings.Contains(e.Message, "sk-test-abcdef") {
		t.Errorf("api key in error: %q", e.Message)
	}
	if e := run(openai("/drift")); e.Class != steps.SchemaDrift {
		t.Errorf("no choices: %+v", e)
	}
	if e := run(openai("/html")); e.Class != steps.SchemaDrift {
		t.Errorf("html 200: %+v", e)
	}
	if e := run(&steps.Credential{Type: "openai", Secret: map[string]any{"apiKey": "k-123", "baseURL": "file:///etc"}}); e.Class != steps.Permanent {
		t.Errorf("bad baseURL: %+v", e)
	}
}
