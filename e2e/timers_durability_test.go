package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// gatedModel is an OpenAI-compatible API that holds every call until its
// gate opens, so a test can kill the worker that made a call while the
// call is still open.
type gatedModel struct {
	*httptest.Server
	gate     chan struct{}
	openOnce sync.Once
	mu       sync.Mutex
	calls    map[string]int
}

func newGatedModel(t *testing.T) *gatedModel {
	m := &gatedModel{gate: make(chan struct{}), calls: map[string]int{}}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		model, _ := req["model"].(string)
		m.mu.Lock()
		m.calls[model]++
		m.mu.Unlock()
		if model == "held" {
			select {
			case <-m.gate:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-gated", "object": "chat.completion", "model": model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": "label by " + model}}},
			"usage":   map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
		})
	}))
	t.Cleanup(func() { m.open(); m.Close() })
	return m
}

func (m *gatedModel) open() { m.openOnce.Do(func() { close(m.gate) }) }

func (m *gatedModel) count(model string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[model]
}

// TestTimersSurviveWorkerKillAndRedisWipe holds three kinds of durable
// work at once on a stack with a single worker process: an escalation
// whose next level is an hour away, an evaluation whose replays are in the
// middle of model calls, and a release waiting for its analysis. The
// worker is SIGKILLed and the stack's Redis wiped; a new worker must pick
// every one of them up from Postgres: the escalation level fires once when
// its instant (moved back in Postgres) comes, the evaluation judges every
// example, and the release is promoted by the analysis.
func TestTimersSurviveWorkerKillAndRedisWipe(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1, "SLUICE_STEP_STALE_AFTER=3s", "SLUICE_RELEASE_ANALYSIS_INTERVAL=300ms")
	f := st.fixture(t, "timers")
	g := f.owner.on(st.server)
	recv := newScriptServer(t)
	db := st.ownerDB(t)

	// An approval whose escalation's first level is an hour away.
	hook, _ := hookEndpoint(t, f.owner, recv.URL+"/hook", "run.failed")
	f.owner.ok(mCreateEsc, map[string]any{"in": map[string]any{"name": "slow", "levels": []any{
		map[string]any{"delay": "1h", "targets": []any{map[string]any{"webhookEndpointID": hook}}},
	}}})
	appWF, _ := deployWorkflow(t, f, "timers-approval", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "escalation": "slow"},
	}})
	appRun := str(g.ok(mStartRun, map[string]any{"w": appWF, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	var approvalID string
	eventually(t, 30*time.Second, func() (bool, string) {
		list := edges(g.ok(qApprovalsOf, map[string]any{"r": appRun}), "approvals")
		if len(list) == 1 {
			approvalID = str(list[0], "id")
		}
		if approvalID == "" {
			return false, "no approval yet"
		}
		list = edges(g.ok(qEscOf, map[string]any{"s": approvalID}), "escalations")
		return len(list) == 1 && list[0]["nextFireAt"] != nil, fmt.Sprintf("escalation of %s: %v", approvalID, list)
	})

	// Production runs to evaluate, then an evaluation whose candidate model
	// holds every call open.
	ai := newGatedModel(t)
	api := newScriptServer(t)
	f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	evalWF := str(f.owner.ok(mCreateWF, map[string]any{"n": "timers-eval", "s": "timers-eval"}), "createWorkflow.id")
	ev1 := newVersion(t, f.owner, evalWF, evalDefinition(api.URL, false))
	f.owner.ok(mDeploy, map[string]any{"v": ev1, "e": f.prodEnvID})
	const examples = 6
	for i := range examples {
		id := str(g.ok(mStartRun, map[string]any{"w": evalWF, "e": f.prodEnvID, "i": map[string]any{"ticket": fmt.Sprintf("T-%d", i)}}), "startRun.id")
		waitRun(t, g, id, 60*time.Second, "succeeded")
	}
	evalID := str(g.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": evalWF, "dataset": map[string]any{"last": examples},
		"modelOverrides": []any{map[string]any{"stepID": "*", "model": "held"}}}}), "evaluateVersion.id")
	eventually(t, 30*time.Second, func() (bool, string) {
		return ai.count("held") > 0, "no replay reached the held model yet"
	})

	// A release of a healthy candidate, waiting for its analysis.
	flaky := newFlakyAPI(t)
	relWF, stable := deployWorkflow(t, f, "timers-release", callDef(flaky.URL+"/ok"))
	cand := newVersion(t, f.owner, relWF, callDef(flaky.URL+"/ok?v=2"))
	rel := str(g.ok(mCreateRelease, map[string]any{"in": map[string]any{"workflowID": relWF, "environmentID": f.envID, "candidateVersionID": cand,
		"steps":    []any{map[string]any{"weightPercent": 50, "holdFor": "1s", "minRuns": 4}},
		"analysis": map[string]any{"minRunsPerSide": 2}}}), "createRelease.id")
	if stable == cand {
		t.Fatal("candidate is the stable version")
	}

	// Kill the only worker and wipe Redis: every timer and wake-up it held
	// in memory or in asynq is gone.
	w := st.workers[0]
	if err := w.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-w.done
	rdb := st.redis()
	defer rdb.Close()
	keys, err := rdb.DBSize(t.Context()).Result()
	if err != nil || keys == 0 {
		t.Fatalf("redis held %d keys before the wipe (%v): the wipe would prove nothing", keys, err)
	}
	if err := rdb.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	// The escalation's hour passes: its instant moves back in Postgres.
	if res, err := db.Exec(`UPDATE escalations SET next_fire_at = now() - interval '1 second' WHERE subject_id = $1 AND next_fire_at IS NOT NULL`, approvalID); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("moved %d escalation timers, want 1", n)
	}
	ai.open()
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw

	// The escalation fires its level once, from Postgres alone.
	hookWaitMsgs(t, recv, "/hook", 1, func(m hookMsg) bool {
		return m.Type == "approval.escalated" && str(m.Data, "approvalID") == approvalID
	})
	eventually(t, 30*time.Second, func() (bool, string) {
		esc := escalationOf(t, g, approvalID)
		return len(get(esc, "firings").([]any)) == 1 && esc["nextFireAt"] == nil, fmt.Sprintf("escalation: %v", esc)
	})

	// The evaluation judges every example.
	got := waitEvaluation(t, g, evalID, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED")
	if str(got, "status") != "COMPLETED" || get(got, "done") != float64(examples) {
		t.Fatalf("evaluation after the kill: %v", got)
	}
	v := get(got, "summary.verdicts").(map[string]any)
	judged := 0
	for _, n := range v {
		judged += int(n.(float64))
	}
	if judged != examples || v["error"] != float64(0) {
		t.Fatalf("verdicts after the kill: %v", v)
	}

	// The release, fed runs, is promoted by the new worker's analysis.
	eventually(t, 90*time.Second, func() (bool, string) {
		r := releaseOf(t, g, rel)
		if str(r, "state") == "PROMOTED" {
			return true, ""
		}
		id := str(g.ok(mStartRun, map[string]any{"w": relWF, "e": f.envID, "i": map[string]any{}}), "startRun.id")
		waitRun(t, g, id, 30*time.Second, "succeeded")
		return false, fmt.Sprintf("release: %v", r)
	})

	// Deciding the approval ends the run; the level fired exactly once.
	operator := st.client(t, token(t, f.tenantID, "operator"))
	operator.ok(mDecide, map[string]any{"id": approvalID})
	waitRun(t, g, appRun, 30*time.Second, "succeeded")
	esc := escalationOf(t, g, approvalID)
	if str(esc, "status") != "resolved" || len(get(esc, "firings").([]any)) != 1 {
		t.Fatalf("escalation after the decision: %v", esc)
	}
	n := 0
	for _, m := range hookMsgs(t, recv, "/hook") {
		if m.Type == "approval.escalated" && str(m.Data, "approvalID") == approvalID {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("approval.escalated delivered %d times, want 1", n)
	}
}
