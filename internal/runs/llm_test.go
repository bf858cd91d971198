package runs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/ent/run"
)

// modelServer is a loopback OpenAI-compatible API answering every request
// with status (a completion of 1,000 input and 500 output tokens when 200).
type modelServer struct {
	*httptest.Server
	hits atomic.Int64
}

func newModelServer(t *testing.T, status int) *modelServer {
	m := &modelServer{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if status != http.StatusOK {
			fmt.Fprint(w, `{"error":{"message":"overloaded"}}`)
			return
		}
		fmt.Fprint(w, `{"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	t.Cleanup(m.Close)
	return m
}

// fallbackRun deploys a one-step llm workflow whose model (on a server
// answering 503) falls back to another credential's model, and runs it.
func (x *h) fallbackRun(primaryModel, fallbackModel string, maxCostUSD float64) (runID string, primary, backup *modelServer) {
	x.t.Helper()
	primary, backup = newModelServer(x.t, http.StatusServiceUnavailable), newModelServer(x.t, http.StatusOK)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		for name, url := range map[string]string{"primary": primary.URL, "backup": backup.URL} {
			if _, err := x.ctl.CreateCredential(ctx, x.envID, name, credential.TypeOpenai, map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": url + "/v1"}); err != nil {
				return err
			}
		}
		return nil
	})
	d := def("steps.draft.output.text",
		map[string]any{"id": "draft", "type": "llm", "credential": "primary", "model": primaryModel, "maxTokens": 1000,
			"fallbacks": []any{map[string]any{"credential": "backup", "model": fallbackModel}},
			"retry":     map[string]any{"maxAttempts": 1},
			"messages":  []any{map[string]any{"role": "user", "content": "Draft a reply"}}})
	if maxCostUSD > 0 {
		d["maxCostUSD"] = maxCostUSD
	}
	runID = x.start(x.deploy(d), nil)
	x.drain()
	return runID, primary, backup
}

func (x *h) modelCalls(runID string) []*ent.ModelCall {
	x.t.Helper()
	var out []*ent.ModelCall
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		out, err = c.ModelCall.Query().Where(modelcall.RunID(runID)).Order(ent.Asc(modelcall.FieldCreatedAt), ent.Asc(modelcall.FieldID)).All(ctx)
		return err
	})
	return out
}

// TestLLMFallbackPriced: the step's model answering 503 falls back to the
// next one in the same attempt; both calls are in the attempt's trace and
// recorded as model calls, the failed one at no cost, and the run and step
// cost what the answering call cost.
func TestLLMFallbackPriced(t *testing.T) {
	t.Parallel()
	x := newH(t)
	id, primary, backup := x.fallbackRun("gpt-4o-mini", "gpt-4o", 0)
	r := x.run(id)
	if r.Status != run.StatusSucceeded || string(r.Output) != `"hello"` {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	if primary.hits.Load() != 1 || backup.hits.Load() != 1 {
		t.Fatalf("primary got %d requests, backup %d", primary.hits.Load(), backup.hits.Load())
	}
	at := x.attempts(id, "draft")
	if len(at) != 1 || len(at[0].Calls) != 2 {
		t.Fatalf("attempts %v", at)
	}
	first, second := at[0].Calls[0], at[0].Calls[1]
	if first["model"] != "gpt-4o-mini" || first["statusCode"] != float64(503) || first["costMicroUSD"] != float64(0) || first["priced"] != true ||
		second["model"] != "gpt-4o-2024-08-06" || second["costMicroUSD"] == float64(0) {
		t.Fatalf("calls %v / %v", first, second)
	}
	mc := x.modelCalls(id)
	if len(mc) != 2 || mc[0].Model != "gpt-4o-mini" || mc[0].CostMicroUsd != 0 || mc[1].Model != "gpt-4o-2024-08-06" || mc[1].CostMicroUsd <= 0 {
		t.Fatalf("model calls %v", mc)
	}
	// gpt-4o: 2.5 USD/MTok in, 10 USD/MTok out.
	want := int64(1000*2.5 + 500*10)
	if mc[1].CostMicroUsd != want || r.CostMicroUsd != want || x.step(id, "draft").CostMicroUsd != want || at[0].CostMicroUsd != want {
		t.Errorf("costs: call %d, attempt %d, step %d, run %d; want %d", mc[1].CostMicroUsd, at[0].CostMicroUsd, x.step(id, "draft").CostMicroUsd, r.CostMicroUsd, want)
	}
}

// TestLLMFallbackBudget: the budgets are checked again before the
// fallback's call: a fallback that could pass the run's maxCostUSD, or the
// tenant's monthly budget, is not called; the step fails with class budget
// and a budget.exceeded event, and the failed call is still recorded.
func TestLLMFallbackBudget(t *testing.T) {
	t.Parallel()
	// gpt-4o-mini's worst case (1,000 output tokens at 0.6 USD/MTok) fits
	// 0.002 USD; gpt-4o's (10 USD/MTok) does not.
	check := func(t *testing.T, x *h, id string, primary, backup *modelServer, scope string) {
		t.Helper()
		r := x.run(id)
		if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "budget" {
			t.Fatalf("run %s %v", r.Status, r.ErrorClass)
		}
		if primary.hits.Load() != 1 || backup.hits.Load() != 0 {
			t.Fatalf("primary got %d requests, backup %d (must be refused)", primary.hits.Load(), backup.hits.Load())
		}
		ev := x.event(id, "budget.exceeded", "draft")
		if ev.Data["scope"] != scope || ev.Data["estimateMicroUSD"].(float64) < 10_000 {
			t.Errorf("budget.exceeded %v", ev.Data)
		}
		if at := x.attempts(id, "draft"); len(at) != 1 || len(at[0].Calls) != 1 || at[0].Calls[0]["statusCode"] != float64(503) {
			t.Errorf("attempts %v", at)
		}
		if mc := x.modelCalls(id); len(mc) != 1 || mc[0].Model != "gpt-4o-mini" {
			t.Errorf("model calls %v", mc)
		}
		x.wantLog(id, "run.queued", "step.started draft#1", "run.started", "budget.exceeded draft#1", "step.failed draft#1", "run.failed")
	}
	t.Run("run", func(t *testing.T) {
		t.Parallel()
		x := newH(t)
		id, primary, backup := x.fallbackRun("gpt-4o-mini", "gpt-4o", 0.002)
		check(t, x, id, primary, backup, "run")
	})
	t.Run("tenant", func(t *testing.T) {
		t.Parallel()
		x := newH(t)
		x.in(func(ctx context.Context, _ *ent.Client) error {
			usd := 0.002
			_, err := x.ctl.SetTenantBudget(ctx, &usd)
			return err
		})
		id, primary, backup := x.fallbackRun("gpt-4o-mini", "gpt-4o", 0)
		check(t, x, id, primary, backup, "tenant")
	})
}
