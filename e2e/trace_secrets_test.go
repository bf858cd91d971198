package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestCanaryNeverInTraceOrEvents uses a canary credential in http and llm
// steps against servers that echo what they receive (the Authorization
// header and the request body) and checks that the canary appears nowhere
// a client or operator can read: the run's trace (calls with their recorded
// bodies), step outputs, events, and the processes' logs.
func TestCanaryNeverInTraceOrEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "canary")
	// Everything that carries the canary goes through a stack of its own,
	// whose logs are complete once its processes have stopped.
	st := newStack(t, 1)
	owner := f.owner.on(st.server)
	canary := "canary-" + randHex(16)
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"authorization": r.Header.Get("Authorization"), "seen": r.Header.Get("Authorization"), "path": r.URL.Path})
	}))
	t.Cleanup(echo.Close)
	// The fake model repeats its own API key: the call's redactor must catch it.
	ai := newFakeOpenAI(t, "the key was "+canary+"-ai")
	owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "echo", "t": "bearer", "s": map[string]any{"token": canary}})
	owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": canary + "-ai", "baseURL": ai.URL + "/v1"}})
	def := map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "fetch", "type": "http", "credential": "echo", "request": map[string]any{"method": "GET", "url": echo.URL + "/tickets/1"}},
			map[string]any{"id": "ask", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "needs": []any{"fetch"},
				"messages": []any{map[string]any{"role": "user", "content": "Summarise {{ steps.fetch.output.body.path }}"}}},
			map[string]any{"id": "post", "type": "http", "credential": "echo", "needs": []any{"ask"}, "sideEffect": true,
				"request": map[string]any{"method": "POST", "url": echo.URL + "/notes", "body": map[string]any{"text": "{{ steps.ask.output.text }}"}}},
		},
	}
	wf, _ := deployWorkflow(t, f, "canary", def)
	id := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed")
	if run["status"] != "succeeded" {
		t.Fatalf("run: %v", run)
	}
	trace := owner.do(`query($id: ID!) { node(id: $id) { ... on Run { output steps { stepID output calls { kind method host path statusCode durationMs provider model inputTokens outputTokens } attemptList { calls { kind method host path statusCode provider model inputTokens outputTokens error } } } events { type data } } } }`, map[string]any{"id": id})
	if len(trace.Errors) > 0 {
		t.Fatalf("trace query: %s", trace.Raw)
	}
	calls := 0
	for _, s := range get(trace.Data, "node.steps").([]any) {
		for _, a := range get(s, "attemptList").([]any) {
			calls += len(get(a, "calls").([]any))
		}
	}
	if calls != 3 {
		t.Fatalf("trace has %d calls, want 3: %s", calls, trace.Raw)
	}
	// StepRun.calls is the same trace, per step, as the DESIGN contract names it.
	for _, s := range get(trace.Data, "node.steps").([]any) {
		list := get(s, "calls").([]any)
		if len(list) != 1 {
			t.Fatalf("step %s has calls %v, want 1", str(s, "stepID"), list)
		}
		if str(s, "stepID") == "ask" && (str(list[0], "provider") != "openai" || get(list[0], "inputTokens") != float64(120)) {
			t.Fatalf("model call: %v", list[0])
		}
	}
	if strings.Contains(trace.Raw, canary) {
		t.Fatalf("canary in the run's trace, outputs or events: %s", trace.Raw)
	}
	if !strings.Contains(trace.Raw, "[REDACTED]") {
		t.Fatalf("the echoed credential was not visibly redacted: %s", trace.Raw)
	}
	// A stopped process's log is complete (stop waits until its output
	// has been read). The suite's processes are included too: their
	// workers' reconcilers may pick up a step of the stack's run.
	logs := ""
	for _, p := range append([]*process{st.server}, st.workers...) {
		p.stop()
		logs += p.Logs()
	}
	if !strings.Contains(logs, f.tenantID) {
		t.Fatalf("the stack's log does not show the test's requests:\n%s", tail(logs, 2000))
	}
	logs += allLogs()
	for _, w := range suite.workers {
		logs += w.Logs()
	}
	if strings.Contains(logs, canary) {
		t.Fatal("canary in the processes' logs")
	}
}
