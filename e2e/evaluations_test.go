package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// modelFake is an OpenAI-compatible API whose answer, usage and latency
// depend on the model asked for.
type modelFake struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string]int
}

func newModelFake(t *testing.T) *modelFake {
	f := &modelFake{calls: map[string]int{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		model, _ := req["model"].(string)
		f.mu.Lock()
		f.calls[model]++
		f.mu.Unlock()
		out := 20
		if model == "gpt-4o" {
			// The bigger model is slower and says more.
			time.Sleep(400 * time.Millisecond)
			out = 60
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-eval", "object": "chat.completion", "model": model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": "label by " + model}}},
			"usage":   map[string]any{"prompt_tokens": 100, "completion_tokens": out, "total_tokens": 100 + out},
		})
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *modelFake) count(model string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[model]
}

// evalDefinition looks a ticket up (http, no side effect), classifies it
// with a model and posts a note (an http side effect).
func evalDefinition(api string, extraStep bool) map[string]any {
	st := []any{
		map[string]any{"id": "lookup", "type": "http", "request": map[string]any{"method": "GET", "url": api + "/tickets/{{ input.ticket }}"}},
		map[string]any{"id": "classify", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 100, "needs": []any{"lookup"},
			"messages": []any{map[string]any{"role": "user", "content": "Classify {{ input.ticket }}"}}},
		map[string]any{"id": "post", "type": "http", "sideEffect": true, "needs": []any{"classify"},
			"request": map[string]any{"method": "POST", "url": api + "/notes", "body": map[string]any{"text": "{{ steps.classify.output.text }}"}}},
	}
	if extraStep {
		st = append(st, map[string]any{"id": "summarize", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 50, "needs": []any{"classify"},
			"messages": []any{map[string]any{"role": "user", "content": "Summarize {{ input.ticket }}"}}})
	}
	st = append(st, map[string]any{"id": "shape", "type": "transform", "needs": []any{"post"},
		"output": map[string]any{"label": "steps.classify.output.text", "posted": "steps.post.output.status"}})
	return map[string]any{"schemaVersion": 1, "steps": st, "output": "steps.shape.output"}
}

const (
	mEvaluate = `mutation($in: EvaluateVersionInput!) { evaluateVersion(input: $in) { id status total baselineVersionID candidateVersionID } }`
	qEval     = `query($id: ID!) { node(id: $id) { ... on Evaluation { id status total done spentMicroUSD spentUSD budgetUSD message
		summary { verdicts { improved regressed unchanged error inconclusive } passRate
			baseline { runs costPerRunMicroUSD p50DurationMs p95DurationMs tokensPerRun }
			candidate { runs costPerRunMicroUSD p50DurationMs p95DurationMs tokensPerRun }
			costPerRunDeltaMicroUSD costPerRunDeltaPct p50DurationDeltaMs p95DurationDeltaMs p95DurationDeltaPct monthlyRuns projectedMonthlyCostDeltaMicroUSD }
		examples(first: 3) { totalCount edges { node { verdict baselineCostUSD candidateCostUSD baselineOutput candidateOutput diff scores message candidateRunID } } } } } }`
)

func waitEvaluation(t *testing.T, c *client, id string, want ...string) map[string]any {
	t.Helper()
	var ev map[string]any
	eventually(t, 60*time.Second, func() (bool, string) {
		ev, _ = get(c.ok(qEval, map[string]any{"id": id}), "node").(map[string]any)
		for _, w := range want {
			if str(ev, "status") == w {
				return true, ""
			}
		}
		return false, fmt.Sprintf("evaluation %s not %v: %v", id, want, ev)
	})
	return ev
}

func TestEvaluateModelOverride(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eval")
	api := newScriptServer(t)
	ai := newModelFake(t)
	f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "triage", "s": "triage"}), "createWorkflow.id")
	v1 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": evalDefinition(api.URL, false)}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v1})
	f.owner.ok(mDeploy, map[string]any{"v": v1, "e": f.prodEnvID})

	hookEndpoint(t, f.owner, api.URL+"/hooks", "evaluation.completed", "run.succeeded")
	const n = 50
	ids := make([]string, n)
	// In batches of 5, so that the recorded durations are the workflow's,
	// not a queue's.
	for i := range n {
		ids[i] = str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": map[string]any{"ticket": fmt.Sprintf("T-%d", i)}}), "startRun.id")
		if i%5 == 4 {
			for _, id := range ids[i-4 : i+1] {
				waitRun(t, f.owner, id, 60*time.Second, "succeeded")
			}
		}
	}
	notes, lookups := len(api.calls("/notes")), len(api.calls("/tickets/"))
	if notes != n || lookups != n || ai.count("gpt-4o-mini") != n {
		t.Fatalf("production: notes %d lookups %d model calls %d, want %d each", notes, lookups, ai.count("gpt-4o-mini"), n)
	}

	// What if classify ran on gpt-4o? A CEL scorer prefers longer labels.
	ev := f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf,
		"modelOverrides": []any{map[string]any{"stepID": "*", "model": "gpt-4o"}},
		"scorers":        []any{map[string]any{"kind": "CEL", "expression": "candidate.label == baseline.label ? 0 : (size(candidate.label) > size(baseline.label) ? 1 : -1)"}},
	}})
	id := str(ev, "evaluateVersion.id")
	if str(ev, "evaluateVersion.total") != "" && get(ev, "evaluateVersion.total") != float64(n) || str(ev, "evaluateVersion.candidateVersionID") != v1 {
		t.Fatalf("evaluation: %v", ev)
	}
	got := waitEvaluation(t, f.owner, id, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(got, "status") != "COMPLETED" || get(got, "done") != float64(n) {
		t.Fatalf("evaluation: %v", got)
	}
	// The side effect answered from the recording; the model and the lookup ran live.
	if c := len(api.calls("/notes")); c != notes {
		t.Fatalf("the side-effect API got %d calls from the evaluation, want 0", c-notes)
	}
	if ai.count("gpt-4o") != n || len(api.calls("/tickets/")) != 2*n {
		t.Fatalf("live calls: gpt-4o %d, lookups %d", ai.count("gpt-4o"), len(api.calls("/tickets/")))
	}
	sum := get(got, "summary").(map[string]any)
	// "label by gpt-4o" is shorter than "label by gpt-4o-mini": regressed.
	if get(sum, "verdicts.regressed") != float64(n) || get(sum, "passRate") != float64(0) {
		t.Fatalf("summary: %v", sum)
	}
	if d := get(sum, "costPerRunDeltaMicroUSD").(float64); d <= 0 || get(sum, "costPerRunDeltaPct").(float64) <= 0 || get(sum, "candidate.costPerRunMicroUSD").(float64) <= get(sum, "baseline.costPerRunMicroUSD").(float64) {
		t.Fatalf("cost delta %v: %v", d, sum)
	}
	if get(sum, "candidate.p50DurationMs").(float64) < 400 || get(sum, "p50DurationDeltaMs").(float64) <= 0 {
		t.Fatalf("latency delta: %v", sum)
	}
	if get(sum, "monthlyRuns") != float64(n) || get(sum, "projectedMonthlyCostDeltaMicroUSD") != float64(n)*get(sum, "costPerRunDeltaMicroUSD").(float64) {
		t.Fatalf("projection: %v", sum)
	}
	ex := edges(got, "examples")
	if len(ex) == 0 {
		t.Fatalf("examples: %v", got)
	}
	x := ex[0]
	if str(x, "verdict") != "REGRESSED" || !strings.Contains(str(x, "candidateOutput.label"), "gpt-4o") || len(x["diff"].([]any)) == 0 {
		t.Fatalf("example: %v", x)
	}

	// recordedOnly: a candidate with a step the recording never ran is
	// inconclusive, never passed, and nothing is called.
	v2 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": evalDefinition(api.URL, true)}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v2})
	mini, look := ai.count("gpt-4o-mini"), len(api.calls("/tickets/"))
	id2 := str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v2, "recordedOnly": true,
		"dataset": map[string]any{"last": 3}}}), "evaluateVersion.id")
	got2 := waitEvaluation(t, f.owner, id2, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if get(got2, "summary.verdicts.inconclusive") != float64(3) || get(got2, "summary.passRate") != nil {
		t.Fatalf("recordedOnly: %v", got2)
	}
	if ai.count("gpt-4o-mini") != mini || len(api.calls("/tickets/")) != look || len(api.calls("/notes")) != notes {
		t.Fatalf("recordedOnly called out: model %d, lookups %d", ai.count("gpt-4o-mini")-mini, len(api.calls("/tickets/"))-look)
	}
	x2 := edges(got2, "examples")[0]
	if !strings.Contains(str(x2, "message"), "unrecorded call") {
		t.Fatalf("inconclusive example: %v", x2)
	}

	// A budget smaller than the dataset's cost stops it.
	id3 := str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "budgetMicroUSD": 1, "concurrency": 1,
		"modelOverrides": []any{map[string]any{"stepID": "classify", "model": "gpt-4o"}}, "dataset": map[string]any{"last": 10}}}), "evaluateVersion.id")
	got3 := waitEvaluation(t, f.owner, id3, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(got3, "budgetUSD") != "0.000001" || str(got, "budgetUSD") != "" || str(x, "candidateCostUSD") == "" {
		t.Fatalf("USD fields: %v / %v / %v", got3["budgetUSD"], got["budgetUSD"], x)
	}
	if str(got3, "status") != "ABORTED_BUDGET" || get(got3, "done").(float64) >= 10 || get(got3, "spentMicroUSD").(float64) < 1 {
		t.Fatalf("budget: %v", got3)
	}

	// evaluation.completed for each, with its summary; the replays sent no
	// run webhooks (only the production runs' run.succeeded arrived).
	done := hookWaitMsgs(t, api, "/hooks", 3, func(m hookMsg) bool { return m.Type == "evaluation.completed" })
	for _, m := range done {
		if m.Data["evaluationID"] == id && (m.Data["status"] != "COMPLETED" || get(m.Data, "summary.verdicts.regressed") != float64(n)) {
			t.Fatalf("evaluation.completed: %v", m.Data)
		}
	}
	succeeded := 0
	for _, m := range hookMsgs(t, api, "/hooks") {
		if m.Type == "run.succeeded" {
			succeeded++
		}
	}
	if succeeded != n {
		t.Fatalf("run.succeeded webhooks: %d, want %d (the production runs only)", succeeded, n)
	}

	list := edges(f.owner.ok(`query($w: ID) { evaluations(workflowID: $w) { edges { node { id status } } } }`, map[string]any{"w": wf}), "evaluations")
	if len(list) != 3 || list[0]["id"] != id3 {
		t.Fatalf("evaluations: %v", list)
	}

	// cancelEvaluation stops one in flight: the rest is skipped, the
	// replays running are cancelled.
	id4 := str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "concurrency": 2,
		"modelOverrides": []any{map[string]any{"stepID": "classify", "model": "gpt-4o"}}}}), "evaluateVersion.id")
	qExamples := `query($id: ID!) { node(id: $id) { ... on Evaluation { examples(first: 50) { edges { node { status candidateRunID } } } } } }`
	var running string
	eventually(t, 30*time.Second, func() (bool, string) {
		for _, x := range edges(f.owner.ok(qExamples, map[string]any{"id": id4}), "node.examples") {
			if x["status"] == "RUNNING" {
				running = str(x, "candidateRunID")
				return true, ""
			}
		}
		return false, "no replay running"
	})
	c := f.owner.ok(`mutation($id: ID!) { cancelEvaluation(id: $id) { status done message } }`, map[string]any{"id": id4})
	if str(c, "cancelEvaluation.status") != "CANCELLED" || get(c, "cancelEvaluation.done").(float64) >= n || !strings.Contains(str(c, "cancelEvaluation.message"), "cancelled by") {
		t.Fatalf("cancel: %v", c)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		ex := edges(f.owner.ok(qExamples, map[string]any{"id": id4}), "node.examples")
		for _, x := range ex {
			if x["status"] != "SKIPPED" && x["status"] != "DONE" {
				return false, fmt.Sprintf("example %v", x)
			}
			if id, _ := x["candidateRunID"].(string); id != "" && x["status"] == "SKIPPED" {
				if st := str(get(f.owner.ok(qRun, map[string]any{"id": id}), "node"), "status"); st != "cancelled" && st != "succeeded" {
					return false, fmt.Sprintf("replay %s of a cancelled evaluation is %s", id, st)
				}
			}
		}
		return true, ""
	})
	if running == "" {
		t.Fatal("no replay was running when the evaluation was cancelled")
	}
	for action, want := range map[string]int{"evaluation.create": 4, "evaluation.cancel": 1} {
		if logs := edges(f.owner.ok(qHookAudit, map[string]any{"a": action}), "auditLogs"); len(logs) != want {
			t.Errorf("%d audit entries %s, want %d", len(logs), action, want)
		}
	}
}

func TestEvaluationIsolationAndBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "evalbad")
	other := newFixture(t, "evalother")
	api := newScriptServer(t)
	ai := newModelFake(t)
	f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	other.owner.ok(mCreateCred, map[string]any{"e": other.prodEnvID, "n": "theirs", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "triage", "s": "triage"}), "createWorkflow.id")
	v1 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": evalDefinition(api.URL, false)}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v1})
	f.owner.ok(mDeploy, map[string]any{"v": v1, "e": f.prodEnvID})
	run := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": map[string]any{"ticket": "T"}}), "startRun.id")
	waitRun(t, f.owner, run, 30*time.Second, "succeeded")

	count := func() float64 {
		return get(f.owner.ok(`{ evaluations { totalCount } }`, nil), "evaluations.totalCount").(float64)
	}
	override := func(o map[string]any) map[string]any {
		return map[string]any{"in": map[string]any{"workflowID": wf, "modelOverrides": []any{o}}}
	}
	for _, tc := range []struct {
		vars map[string]any
		path string
	}{
		{override(map[string]any{"stepID": "nope", "model": "gpt-4o"}), "input.modelOverrides[0].stepID"},
		{override(map[string]any{"stepID": "post", "model": "gpt-4o"}), "input.modelOverrides[0].stepID"},
		{override(map[string]any{"stepID": "*", "credential": "theirs"}), "input.modelOverrides[0].credential"},
		{override(map[string]any{"stepID": "*", "model": "gpt-4o", "params": map[string]any{"bogus": 1}}), "input.modelOverrides[0].params.bogus"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": f.versionID}}, "input.candidateVersionID"},
		{map[string]any{"in": map[string]any{"workflowID": wf}}, "input.candidateVersionID"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "dataset": map[string]any{"last": 1001}}}, "input.dataset.last"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "dataset": map[string]any{"runIDs": []any{"run_nope"}}}}, "input.dataset.runIDs[0]"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "scorers": []any{map[string]any{"kind": "CEL", "expression": "candidate +"}}}}, "input.scorers[0].expression"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "concurrency": 0}}, "input.concurrency"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "scorers": []any{map[string]any{"kind": "JUDGE", "credential": "openai"}}}}, "input.scorers[0].model"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "scorers": []any{map[string]any{"kind": "JUDGE", "model": "judge"}}}}, "input.scorers[0].credential"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "scorers": []any{map[string]any{"kind": "JUDGE", "model": "judge", "credential": "theirs"}}}}, "input.scorers[0].credential"},
		{map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "scorers": []any{map[string]any{"kind": "JUDGE", "model": "judge", "credential": "openai", "maxTokens": 5000}}}}, "input.scorers[0].maxTokens"},
	} {
		res := f.owner.fail("VALIDATION", mEvaluate, tc.vars)
		if !strings.Contains(fmt.Sprint(res.Errors), tc.path) {
			t.Errorf("%v: want path %s, got %v", tc.vars, tc.path, res.Errors)
		}
	}
	if c := count(); c != 0 {
		t.Fatalf("bad input wrote %v evaluations", c)
	}
	// A viewer cannot create one.
	viewerC := newClient(t, 1, token(t, f.tenantID, "viewer"))
	viewerC.fail("FORBIDDEN", mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1}})

	// A candidate whose input schema the recorded runs do not fit: each
	// such example is an ERROR naming why, and the evaluation completes.
	strict := evalDefinition(api.URL, false)
	strict["input"] = map[string]any{"type": "object", "required": []any{"ticket", "priority"},
		"properties": map[string]any{"ticket": map[string]any{"type": "string"}, "priority": map[string]any{"type": "integer"}}}
	v3 := newVersion(t, f.owner, wf, strict)
	bad := waitEvaluation(t, f.owner, str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v3}}), "evaluateVersion.id"),
		"COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(bad, "status") != "COMPLETED" || get(bad, "summary.verdicts.error") != float64(1) || !strings.Contains(str(edges(bad, "examples")[0], "message"), "cannot replay") {
		t.Fatalf("evaluation of a candidate the runs do not fit: %v", bad)
	}
	// replayRun on that version is refused the same way, naming the version.
	for _, mode := range []string{"LIVE", "SANDBOX"} {
		res := f.owner.fail("VALIDATION", `mutation($id: ID!, $v: ID!, $m: ReplayMode!) { replayRun(input: {runID: $id, versionID: $v, mode: $m}) { id } }`,
			map[string]any{"id": run, "v": v3, "m": mode})
		if !strings.Contains(fmt.Sprint(res.Errors), "input.versionID") || !strings.Contains(fmt.Sprint(res.Errors), "priority") {
			t.Errorf("replay %s on a version the input does not fit: %v", mode, res.Errors)
		}
	}

	id := str(f.owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1, "recordedOnly": true}}), "evaluateVersion.id")
	// evaluationUpdated streams its progress until it ends.
	w := connectWS(t, server(1), wsBearer(token(t, f.tenantID, "viewer")))
	w.subscribe("ev", `subscription($id: ID!) { evaluationUpdated(id: $id) { id status done total } }`, map[string]any{"id": id})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for last := ""; last != "COMPLETED"; {
		frame, err := w.next(ctx, "ev")
		if err != nil || frame.Type != "next" || str(frame.Data, "evaluationUpdated.id") != id {
			t.Fatalf("evaluationUpdated: %v %+v (last status %s)", err, frame, last)
		}
		last = str(frame.Data, "evaluationUpdated.status")
	}
	// Another tenant sees nothing and can name nothing.
	if n := get(other.owner.ok(`{ evaluations { totalCount } }`, nil), "evaluations.totalCount"); n != float64(0) {
		t.Fatalf("other tenant sees %v evaluations", n)
	}
	if n := get(other.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id}), "node"); n != nil {
		t.Fatalf("other tenant's node: %v", n)
	}
	other.owner.fail("NOT_FOUND", `mutation($id: ID!) { cancelEvaluation(id: $id) { id } }`, map[string]any{"id": id})
	other.owner.fail("VALIDATION", mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v1}})
	otherWf := str(other.owner.ok(mCreateWF, map[string]any{"n": "t", "s": "t"}), "createWorkflow.id")
	other.owner.fail("VALIDATION", mEvaluate, map[string]any{"in": map[string]any{"workflowID": otherWf, "candidateVersionID": v1}})
	got := waitEvaluation(t, f.owner, id, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(got, "status") != "COMPLETED" || get(got, "summary.verdicts.unchanged") != float64(1) {
		t.Fatalf("recordedOnly evaluation of the same version: %v", got)
	}
	f.owner.fail("CONFLICT", `mutation($id: ID!) { cancelEvaluation(id: $id) { id } }`, map[string]any{"id": id})
}
