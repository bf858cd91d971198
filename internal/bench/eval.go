package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"
)

// ScenarioEval is `--only eval`: an evaluation of EvalRuns recorded runs.
const ScenarioEval = "eval"

// evalRuns is how many recorded runs the eval scenario evaluates.
const evalRuns = 200

// evalDefinition calls a model, then posts the answer (a side effect), both
// to a local fake in the benchmark's process.
func evalDefinition(base string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "classify", "type": "llm", "credential": "bench-openai", "model": "gpt-4o-mini", "maxTokens": 50,
			"messages": []any{map[string]any{"role": "user", "content": "Classify {{ string(input.n) }}"}}},
		map[string]any{"id": "post", "type": "http", "sideEffect": true, "needs": []any{"classify"},
			"request": map[string]any{"method": "POST", "url": base + "/notes", "body": map[string]any{"text": "{{ steps.classify.output.text }}"}}},
		map[string]any{"id": "shape", "type": "transform", "needs": []any{"post"}, "output": map[string]any{"label": "steps.classify.output.text"}},
	}, "output": "steps.shape.output"}
}

const (
	mBenchCred = `mutation($e: ID!, $s: Map!) { createCredential(input: {environmentID: $e, name: "bench-openai", type: openai, secret: $s}) { id } }`
	mBenchEval = `mutation($w: ID!, $e: ID!, $v: ID!, $n: Int!) { evaluateVersion(input: {workflowID: $w, environmentID: $e, candidateVersionID: $v,
		recordedOnly: true, concurrency: 32, dataset: {last: $n}}) { id } }`
	qBenchEval     = `query($id: ID!) { node(id: $id) { ... on Evaluation { status done message summary { verdicts { unchanged } } } } }`
	qBenchVersions = `query($w: ID!) { node(id: $w) { ... on Workflow { versions(first: 1) { edges { node { id } } } } } }`
)

// eval runs evalRuns runs live (a model call and a side effect, to a local
// fake), timing them, then evaluates the same version on them with
// recordedOnly (the models answered from the recording) and reports
// examples per second and the evaluation's time over the live runs'.
func (s *session) eval(ctx context.Context) error {
	var mu sync.Mutex
	calls := 0
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": "routine"}}},
			"usage":   map[string]any{"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}})
	}))
	defer fake.Close()
	if _, err := s.c.call(ctx, mBenchCred, map[string]any{"e": s.envID, "s": map[string]any{"apiKey": "sk-bench", "baseURL": fake.URL + "/v1"}}); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	wf, err := s.deploy(ctx, "eval", evalDefinition(fake.URL))
	if err != nil {
		return err
	}
	began := time.Now()
	ids := make([]string, 0, evalRuns)
	for i := range evalRuns {
		id, err := s.start(ctx, wf, i)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	for {
		m, err := s.c.statuses(ctx, ids)
		if err != nil {
			return err
		}
		n := 0
		for _, r := range m {
			if r.terminal() {
				n++
			}
		}
		if n == len(ids) {
			break
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	live := time.Since(began)
	d, err := s.c.call(ctx, qBenchVersions, map[string]any{"w": wf})
	if err != nil {
		return err
	}
	versions, _ := path(d, "node.versions.edges").([]any)
	if len(versions) == 0 {
		return fmt.Errorf("workflow %s has no version", wf)
	}
	mu.Lock()
	before := calls
	mu.Unlock()
	began = time.Now()
	d, err = s.c.call(ctx, mBenchEval, map[string]any{"w": wf, "e": s.envID, "v": str(versions[0], "node.id"), "n": evalRuns})
	if err != nil {
		return fmt.Errorf("evaluateVersion: %w", err)
	}
	id := str(d, "evaluateVersion.id")
	for {
		d, err := s.c.call(ctx, qBenchEval, map[string]any{"id": id})
		if err != nil {
			return err
		}
		st := str(d, "node.status")
		if st != "QUEUED" && st != "RUNNING" {
			if st != "COMPLETED" || path(d, "node.summary.verdicts.unchanged") != float64(evalRuns) {
				return fmt.Errorf("evaluation ended %s: %v", st, d)
			}
			break
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	took := time.Since(began)
	mu.Lock()
	extra := calls - before
	mu.Unlock()
	if extra != 0 {
		return fmt.Errorf("the evaluation called out %d times; recordedOnly calls nothing", extra)
	}
	s.figure(ScenarioEval, fmt.Sprintf("%d live runs, wall", evalRuns), float64(live.Milliseconds()), "ms", nil)
	s.figure(ScenarioEval, fmt.Sprintf("evaluation of %d recorded runs, wall", evalRuns), float64(took.Milliseconds()), "ms", nil)
	s.figure(ScenarioEval, "examples per second", float64(evalRuns)/took.Seconds(), "/s", nil)
	s.figure(ScenarioEval, "evaluation over live runs", took.Seconds()/live.Seconds(), "x", nil)
	return nil
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
