package runs

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/envvars"
)

// TestEnvVarsFromTheRunsVersion: an llm step's messages, a transform's if
// and output read env.vars from the variables version the run started with,
// even when the environment changed before a worker ran the steps; a run
// started after the change reads the new values.
func TestEnvVarsFromTheRunsVersion(t *testing.T) {
	t.Parallel()
	x := newH(t)
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5}}`)
	}))
	t.Cleanup(srv.Close)
	setVars := func(lang string, limit int64) {
		x.in(func(ctx context.Context, _ *ent.Client) error {
			_, err := x.ctl.SetEnvironmentVariables(ctx, x.envID, control.VariableChange{Set: []envvars.Variable{
				{Name: "lang", Type: envvars.String, Value: lang},
				{Name: "limit", Type: envvars.Integer, Value: limit},
			}})
			return err
		})
	}
	setVars("French", 3)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.ctl.CreateCredential(ctx, x.envID, "openai", credential.TypeOpenai, map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": srv.URL + "/v1"})
		return err
	})
	d := def("has(steps.shape) ? steps.shape.output : {'skipped': env.vars.lang}",
		map[string]any{"id": "ask", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 50,
			"messages": []any{map[string]any{"role": "user", "content": "Answer in {{ env.vars.lang }}"}}},
		map[string]any{"id": "shape", "type": "transform", "needs": []any{"ask"}, "if": "env.vars.limit > 2",
			"output": map[string]any{"lang": "env.vars.lang", "next": "env.vars.limit + 1"}})
	d["vars"] = map[string]any{"lang": map[string]any{"type": "string", "required": true}, "limit": map[string]any{"type": "integer", "default": 0}}
	wf := x.deploy(d)
	first := x.start(wf, nil)
	setVars("German", 1) // before any step ran
	x.drain()
	second := x.start(wf, nil)
	x.drain()

	r := x.run(first)
	if r.Status != run.StatusSucceeded || r.EnvVarsVersion != 1 || strings.ReplaceAll(string(r.Output), " ", "") != `{"lang":"French","next":4}` {
		t.Fatalf("first run: %s v%d %s", r.Status, r.EnvVarsVersion, r.Output)
	}
	r = x.run(second)
	if r.Status != run.StatusSucceeded || r.EnvVarsVersion != 2 || strings.ReplaceAll(string(r.Output), " ", "") != `{"skipped":"German"}` {
		t.Fatalf("second run: %s v%d %s", r.Status, r.EnvVarsVersion, r.Output)
	}
	// limit 1: shape is skipped in the second run.
	if st := x.step(second, "shape"); st.Status != "skipped" {
		t.Fatalf("second run's shape: %s", st.Status)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || !strings.Contains(bodies[0], "Answer in French") || !strings.Contains(bodies[1], "Answer in German") {
		t.Fatalf("model requests: %q", bodies)
	}
}
