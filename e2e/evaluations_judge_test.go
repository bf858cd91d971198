package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// judgeFake is an OpenAI-compatible API: the models gpt-4o and gpt-4o-mini
// answer "label by <model>"; the model "judge" prefers, of the two answers
// it is shown, the one labelled by gpt-4o (not mini), and says which
// position that was.
type judgeFake struct {
	*httptest.Server
	mu        sync.Mutex
	calls     map[string]int
	positions map[string]int // "A" | "B": where the judge found the preferred answer
}

func newJudgeFake(t *testing.T) *judgeFake {
	f := &judgeFake{calls: map[string]int{}, positions: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model    string `json:"model"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		content := "label by " + req.Model
		if req.Model == "judge" {
			prompt := ""
			for _, m := range req.Messages {
				prompt += m.Content
			}
			a, b, _ := strings.Cut(prompt[strings.Index(prompt, "Answer A:"):], "Answer B:")
			winner := "tie"
			switch {
			case strings.Contains(a, `by gpt-4o"`) && !strings.Contains(b, `by gpt-4o"`):
				winner = "A"
			case strings.Contains(b, `by gpt-4o"`) && !strings.Contains(a, `by gpt-4o"`):
				winner = "B"
			}
			f.mu.Lock()
			f.positions[winner]++
			f.mu.Unlock()
			out, _ := json.Marshal(map[string]any{"winner": winner, "reason": "the bigger model's label"})
			content = string(out)
		}
		f.mu.Lock()
		f.calls[req.Model]++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-judge", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": content}}},
			"usage":   map[string]any{"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100},
		})
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *judgeFake) count(model string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[model]
}

// TestEvaluationJudgeScorer: a JUDGE scorer compares baseline (gpt-4o-mini)
// and candidate (gpt-4o) outputs through a model of the environment's
// credential. The answers are shown in alternating order, so the judge
// finds the candidate first in half of the examples and second in the
// other half; every example is IMPROVED whatever the position, the judge
// is asked once per example, and what it cost counts in the evaluation's
// spend.
func TestEvaluationJudgeScorer(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "judge")
	api := newScriptServer(t)
	ai := newJudgeFake(t)
	f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	f.owner.ok(`mutation { setModelPrice(input: {provider: "openai", model: "judge", inputUSDPerMTok: 10, outputUSDPerMTok: 30}) { id } }`, nil)
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "judged", "s": "judged"}), "createWorkflow.id")
	v1 := newVersion(t, f.owner, wf, evalDefinition(api.URL, false))
	f.owner.ok(mDeploy, map[string]any{"v": v1, "e": f.prodEnvID})
	const n = 6
	for i := range n {
		id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": map[string]any{"ticket": fmt.Sprintf("J-%d", i)}}), "startRun.id")
		waitRun(t, f.owner, id, 60*time.Second, "succeeded")
	}
	id := str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf,
		"modelOverrides": []any{map[string]any{"stepID": "*", "model": "gpt-4o"}},
		"scorers":        []any{map[string]any{"kind": "JUDGE", "credential": "openai", "model": "judge", "criteria": "Which label names the bigger model?"}},
	}}), "evaluateVersion.id")
	got := waitEvaluation(t, f.owner, id, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(got, "status") != "COMPLETED" || get(got, "summary.verdicts.improved") != float64(n) || get(got, "summary.passRate") != float64(1) {
		t.Fatalf("judged evaluation: %v", got)
	}
	if c := ai.count("judge"); c != n {
		t.Fatalf("the judge was asked %d times, want %d", c, n)
	}
	ai.mu.Lock()
	positions := fmt.Sprint(ai.positions)
	ai.mu.Unlock()
	if positions != fmt.Sprint(map[string]int{"A": n / 2, "B": n / 2}) {
		t.Fatalf("where the judge found the candidate: %s, want half A and half B", positions)
	}
	q := `query($id: ID!) { node(id: $id) { ... on Evaluation { spentMicroUSD examples(first: 50) { edges { node { verdict scores candidateCostMicroUSD } } } } } }`
	ev := get(f.owner.ok(q, map[string]any{"id": id}), "node").(map[string]any)
	var replays, judging float64
	for _, x := range edges(ev, "examples") {
		replays += get(x, "candidateCostMicroUSD").(float64)
		scores := x["scores"].([]any)
		if len(scores) != 1 || get(scores[0], "kind") != "JUDGE" || get(scores[0], "pass") != true || get(scores[0], "value") != float64(1) ||
			!strings.Contains(str(scores[0], "message"), "the bigger model's label") {
			t.Fatalf("example: %v", x)
		}
		judging += get(scores[0], "costMicroUSD").(float64)
	}
	// 1,000 input tokens at $10/MTok and 100 output at $30/MTok: 13,000 micro-USD a call.
	if judging != float64(n*13000) || get(ev, "spentMicroUSD") != replays+judging {
		t.Fatalf("spent %v, replays %v, judging %v", ev["spentMicroUSD"], replays, judging)
	}
}
