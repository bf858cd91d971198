package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	mPause  = `mutation($w: ID!, $e: ID!, $m: PauseMode!, $r: String) { pauseWorkflow(input: {workflowID: $w, environmentID: $e, mode: $m, reason: $r}) { workflowID environmentID environment { id name } mode reason pausedBy pausedAt updatedAt } }`
	mResume = `mutation($w: ID!, $e: ID!) { resumeWorkflow(input: {workflowID: $w, environmentID: $e}) { resumed dispatchedSteps } }`
	qPauses = `query($id: ID!) { node(id: $id) { ... on Workflow { id pauses { environmentID mode reason pausedBy pausedAt } } } }`
	qHeld   = `query($id: ID!) { node(id: $id) { ... on Run { id status queueReason queuedSince
		steps { stepID status } events { seq type stepID at } } } }`
)

// gateServer answers steps' calls; a path closed with hold blocks until
// opened (or the request ends), so a test decides when a step finishes.
type gateServer struct {
	*httptest.Server
	mu      sync.Mutex
	gates   map[string]chan struct{}
	entered map[string]int
}

func newGateServer(t *testing.T) *gateServer {
	g := &gateServer{gates: map[string]chan struct{}{}, entered: map[string]int{}}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.entered[r.URL.Path]++
		ch := g.gates[r.URL.Path]
		g.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateServer) hold(path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gates[path] = make(chan struct{})
}

func (g *gateServer) open(path string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ch := g.gates[path]; ch != nil {
		close(ch)
		delete(g.gates, path)
	}
}

func (g *gateServer) count(path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered[path]
}

// pauseChain is n http steps s1..sn, each needing the one before,
// calling <url>/<input.tag>/s<i>.
func pauseChain(url string, n int) map[string]any {
	var steps []map[string]any
	for i := 1; i <= n; i++ {
		var needs []string
		if i > 1 {
			needs = []string{fmt.Sprintf("s%d", i-1)}
		}
		st := engHTTP(fmt.Sprintf("s%d", i), "GET", url+"/{{ input.tag }}/s"+fmt.Sprint(i), needs...)
		st["timeout"] = "30s"
		steps = append(steps, st)
	}
	input := map[string]any{"type": "object", "required": []any{"tag"}, "properties": map[string]any{"tag": map[string]any{"type": "string"}}}
	return engDef(input, "steps.s"+fmt.Sprint(n)+".output.body", steps...)
}

func heldRun(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	r, _ := get(c.ok(qHeld, map[string]any{"id": id}), "node").(map[string]any)
	if r == nil {
		t.Fatalf("run %s not found", id)
	}
	return r
}

// stepEvents lists "type:stepID" of a run's step events in order.
func stepEvents(run map[string]any) []string {
	var out []string
	list, _ := run["events"].([]any)
	for _, e := range list {
		if s := str(e, "stepID"); s != "" {
			out = append(out, str(e, "type")+":"+s)
		}
	}
	return out
}

// TestPauseQueueAndResume: a running 5-step run stops after its current
// step while its workflow is paused (QUEUE), a run started meanwhile is
// created queued and starts nothing, and both finish after resume.
func TestPauseQueueAndResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "pause-q")
	gs := newGateServer(t)
	wf, _ := deployWorkflow(t, f, "paused-chain", pauseChain(gs.URL, 5))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	editor := newClient(t, 0, token(t, f.tenantID, "editor"))

	gs.hold("/a/s2")
	runA := engStart(t, operator, f, wf, map[string]any{"tag": "a"})
	eventually(t, engWait, func() (bool, string) { return gs.count("/a/s2") == 1, "s2 of run a not called" })

	p := get(editor.ok(mPause, map[string]any{"w": wf, "e": f.envID, "m": "QUEUE", "r": "CRM maintenance"}), "pauseWorkflow").(map[string]any)
	if p["mode"] != "QUEUE" || p["reason"] != "CRM maintenance" || p["pausedBy"] == "" || str(p, "environment.name") != "development" {
		t.Fatalf("pauseWorkflow: %v", p)
	}
	// The step running when the pause came finishes and records its result.
	gs.open("/a/s2")
	eventually(t, engWait, func() (bool, string) {
		r := heldRun(t, operator, runA)
		return slices.Contains(stepEvents(r), "step.succeeded:s2"), fmt.Sprintf("s2 not succeeded: %v", stepEvents(r))
	})
	// A run started while paused is created queued.
	runB := str(operator.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"tag": "b"}}), "startRun.id")
	// Every wake-up sent for either run has been handled: had s3 (or b's s1)
	// been sent or claimed, it would have started by now.
	waitQueueHandled(t, suiteRedis(t), "steps", runA)
	waitQueueHandled(t, suiteRedis(t), "steps", runB)
	a := heldRun(t, operator, runA)
	if ev := stepEvents(a); slices.Contains(ev, "step.started:s3") {
		t.Fatalf("s3 started while paused: %v", ev)
	}
	if a["status"] != "running" || a["queueReason"] != "PAUSED" || a["queuedSince"] == nil {
		t.Fatalf("held run a: status %v queueReason %v queuedSince %v", a["status"], a["queueReason"], a["queuedSince"])
	}
	b := heldRun(t, operator, runB)
	if b["status"] != "queued" || b["queueReason"] != "PAUSED" || len(stepEvents(b)) != 0 {
		t.Fatalf("run b while paused: status %v queueReason %v step events %v", b["status"], b["queueReason"], stepEvents(b))
	}
	if n := gs.count("/a/s3") + gs.count("/b/s1"); n != 0 {
		t.Fatalf("%d calls of held steps while paused", n)
	}
	pauses, _ := get(f.owner.ok(qPauses, map[string]any{"id": wf}), "node.pauses").([]any)
	if len(pauses) != 1 || str(pauses[0], "environmentID") != f.envID || str(pauses[0], "mode") != "QUEUE" {
		t.Fatalf("Workflow.pauses: %v", pauses)
	}
	dep := f.owner.ok(`{ node(id: "`+wf+`") { ... on Workflow { deployments { edges { node { active paused { mode reason } } } } } } }`, nil)
	if !strings.Contains(fmt.Sprint(dep), "CRM maintenance") {
		t.Errorf("Deployment.paused: %v", dep)
	}

	res := get(operator.ok(mResume, map[string]any{"w": wf, "e": f.envID}), "resumeWorkflow").(map[string]any)
	if res["resumed"] != true || res["dispatchedSteps"].(float64) < 2 {
		t.Fatalf("resumeWorkflow: %v", res)
	}
	for _, id := range []string{runA, runB} {
		r := waitRun(t, operator, id, engWait, "succeeded", "failed", "cancelled")
		if r["status"] != "succeeded" {
			t.Fatalf("run %s after resume: %v", id, r)
		}
		h := heldRun(t, operator, id)
		if h["queueReason"] != nil {
			t.Errorf("run %s queueReason %v after resume", id, h["queueReason"])
		}
	}
	for _, path := range []string{"/a/s1", "/a/s2", "/a/s3", "/a/s5", "/b/s1", "/b/s5"} {
		if n := gs.count(path); n != 1 {
			t.Errorf("%s called %d times, want 1", path, n)
		}
	}
	if again := get(operator.ok(mResume, map[string]any{"w": wf, "e": f.envID}), "resumeWorkflow.resumed"); again != false {
		t.Errorf("resuming an unpaused workflow: resumed %v, want false", again)
	}
	logs := fmt.Sprint(f.owner.ok(`{ auditLogs(first: 50) { edges { node { action targetID } } } }`, nil))
	for _, action := range []string{"workflow.pause", "workflow.resume"} {
		if strings.Count(logs, "action:"+action+" targetID:"+wf+"]") != 1 {
			t.Errorf("audit: want one %s of %s: %s", action, wf, logs)
		}
	}
}

// TestPauseRejectAndBadInput: under REJECT startRun is CONFLICT naming the
// pause and writes nothing; pausing again updates the mode; bad input and
// roles without the right are refused with nothing written.
func TestPauseRejectAndBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "pause-r")
	editor := newClient(t, 0, token(t, f.tenantID, "editor"))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	viewerC := newClient(t, 0, token(t, f.tenantID, "viewer"))
	countRuns := func() int {
		return len(edges(f.owner.ok(`query($w: ID!) { runs(first: 100, where: {workflowID: $w}) { edges { node { id } } } }`, map[string]any{"w": f.workflowID}), "runs"))
	}
	hooks := newScriptServer(t)
	hookEndpoint(t, f.owner, hooks.URL+"/hooks/pause", "workflow.paused", "workflow.resumed")
	pausesOf := func() []any {
		l, _ := get(f.owner.ok(qPauses, map[string]any{"id": f.workflowID}), "node.pauses").([]any)
		return l
	}

	// Refused before anything is written.
	bad := []struct {
		code, path string
		vars       map[string]any
	}{
		{"NOT_FOUND", "input.workflowID", map[string]any{"w": "wf_01JUNKJUNKJUNKJUNKJUNKJUNK", "e": f.envID, "m": "QUEUE"}},
		{"NOT_FOUND", "input.environmentID", map[string]any{"w": f.workflowID, "e": "env_01JUNKJUNKJUNKJUNKJUNKJUNK", "m": "QUEUE"}},
		{"VALIDATION", "input.reason", map[string]any{"w": f.workflowID, "e": f.envID, "m": "REJECT", "r": strings.Repeat("x", 2001)}},
	}
	for _, b := range bad {
		r := editor.fail(b.code, mPause, b.vars)
		if !strings.Contains(fmt.Sprint(r.Errors), b.path) {
			t.Errorf("%s: error %v does not name %s", b.code, r.Errors, b.path)
		}
	}
	viewerC.fail("FORBIDDEN", mPause, map[string]any{"w": f.workflowID, "e": f.envID, "m": "QUEUE"})
	if l := pausesOf(); len(l) != 0 {
		t.Fatalf("refused pauses wrote %v", l)
	}

	before := countRuns()
	p := editor.ok(mPause, map[string]any{"w": f.workflowID, "e": f.envID, "m": "REJECT", "r": "migrating the CRM"})
	pausedAt := str(p, "pauseWorkflow.pausedAt")
	r := operator.fail("CONFLICT", mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "x"}, "k": "rejected-" + randHex(4)})
	msg := fmt.Sprint(r.Errors)
	for _, want := range []string{"paused", "migrating the CRM", "since"} {
		if !strings.Contains(msg, want) {
			t.Errorf("CONFLICT %q does not say %q", msg, want)
		}
	}
	if n := countRuns(); n != before {
		t.Fatalf("a refused startRun wrote a run: %d runs, had %d", n, before)
	}
	// Another environment of the same workflow is not paused.
	if _, err := operator.tryOK(mStartRun, map[string]any{"w": f.workflowID, "e": f.prodEnvID, "i": map[string]any{"name": "x"}}); err != nil &&
		strings.Contains(err.Error(), "paused") {
		t.Errorf("production refused by development's pause: %v", err)
	}

	// Pausing again updates the mode (and the reason), not since when.
	p2 := operator.ok(mPause, map[string]any{"w": f.workflowID, "e": f.envID, "m": "QUEUE"})
	if str(p2, "pauseWorkflow.mode") != "QUEUE" || str(p2, "pauseWorkflow.pausedAt") != pausedAt {
		t.Fatalf("pause again: %v (first paused at %s)", p2, pausedAt)
	}
	if l := pausesOf(); len(l) != 1 || str(l[0], "mode") != "QUEUE" {
		t.Fatalf("pauses after update: %v", l)
	}
	id := str(operator.ok(mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "q"}}), "startRun.id")
	if h := heldRun(t, operator, id); h["status"] != "queued" || h["queueReason"] != "PAUSED" {
		t.Fatalf("run under QUEUE: %v", h)
	}
	viewerC.fail("FORBIDDEN", mResume, map[string]any{"w": f.workflowID, "e": f.envID})
	editor.ok(mResume, map[string]any{"w": f.workflowID, "e": f.envID})
	if r := waitRun(t, operator, id, engWait, "succeeded", "failed"); r["status"] != "succeeded" {
		t.Fatalf("queued run after resume: %v", r)
	}
	// Tenant webhook events: paused (REJECT, then updated to QUEUE) and resumed.
	ofWF := func(typ string) func(hookMsg) bool {
		return func(m hookMsg) bool {
			return m.Type == typ && str(m.Data, "workflowID") == f.workflowID && str(m.Data, "environmentID") == f.envID
		}
	}
	paused := hookWaitMsgs(t, hooks, "/hooks/pause", 2, ofWF("workflow.paused"))
	modes := map[string]string{} // deliveries may arrive in either order
	for _, m := range paused {
		modes[str(m.Data, "mode")] = str(m.Data, "reason")
	}
	if len(paused) != 2 || modes["REJECT"] != "migrating the CRM" || modes["QUEUE"] != "" {
		t.Errorf("workflow.paused payloads: %v", modes)
	}
	hookWaitMsgs(t, hooks, "/hooks/pause", 1, ofWF("workflow.resumed"))
}

// TestPauseIsolation: another tenant can neither pause a workflow nor see
// its pause.
func TestPauseIsolation(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "pause-iso-a")
	b := newFixture(t, "pause-iso-b")
	a.owner.ok(mPause, map[string]any{"w": a.workflowID, "e": a.envID, "m": "REJECT", "r": "tenant a only"})
	b.owner.fail("NOT_FOUND", mPause, map[string]any{"w": a.workflowID, "e": a.envID, "m": "QUEUE"})
	b.owner.fail("NOT_FOUND", mPause, map[string]any{"w": b.workflowID, "e": a.envID, "m": "QUEUE"})
	b.owner.fail("NOT_FOUND", mResume, map[string]any{"w": a.workflowID, "e": a.envID})
	if n := get(b.owner.ok(qPauses, map[string]any{"id": a.workflowID}), "node"); n != nil {
		t.Fatalf("tenant b sees tenant a's workflow: %v", n)
	}
	if l, _ := get(b.owner.ok(qPauses, map[string]any{"id": b.workflowID}), "node.pauses").([]any); len(l) != 0 {
		t.Fatalf("tenant b's workflow shows pauses %v", l)
	}
	// b's own runs are not refused by a's pause.
	b.owner.ok(mStartRun, map[string]any{"w": b.workflowID, "e": b.envID, "i": map[string]any{"name": "b"}})
	if l, _ := get(a.owner.ok(qPauses, map[string]any{"id": a.workflowID}), "node.pauses").([]any); len(l) != 1 || str(l[0], "reason") != "tenant a only" {
		t.Fatalf("tenant a's pause after tenant b's attempts: %v", l)
	}
	// Under RLS, the app role sees no pause without a tenant.
	var n int
	if err := appDB(t).QueryRowContext(context.Background(), `SELECT count(*) FROM workflow_pauses`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("workflow_pauses visible without a tenant: %d rows, %v", n, err)
	}
}

// TestPauseSurvivesWorkerKillAndRedisWipe: runs held by a pause lose
// nothing when their worker is SIGKILLed and Redis wiped meanwhile: after
// resume each finishes, each step called once.
func TestPauseSurvivesWorkerKillAndRedisWipe(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1)
	defer func() { dumpLogs(t, "pause worker", st.workers) }()
	f := st.fixture(t, "pause-kill")
	gs := newGateServer(t)
	wf, _ := deployWorkflow(t, f, "paused-kill", pauseChain(gs.URL, 3))
	g := f.owner.on(st.server)

	gs.hold("/k0/s1")
	first := str(g.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"tag": "k0"}}), "startRun.id")
	eventually(t, engWait, func() (bool, string) { return gs.count("/k0/s1") == 1, "s1 of k0 not called" })
	g.ok(mPause, map[string]any{"w": wf, "e": f.envID, "m": "QUEUE"})
	gs.open("/k0/s1")
	eventually(t, engWait, func() (bool, string) {
		return slices.Contains(stepEvents(heldRun(t, g, first)), "step.succeeded:s1"), "s1 of k0 not succeeded"
	})
	ids := []string{first}
	for i := 1; i <= 4; i++ {
		ids = append(ids, str(g.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"tag": fmt.Sprintf("k%d", i)}}), "startRun.id"))
	}
	if err := st.workers[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-st.workers[0].done // the harness waits for the process
	rdb := st.redis()
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	w, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = w
	for _, id := range ids {
		if h := heldRun(t, g, id); h["queueReason"] != "PAUSED" {
			t.Fatalf("run %s not held: %v", id, h)
		}
	}
	g.ok(mResume, map[string]any{"w": wf, "e": f.envID})
	statuses, err := g.waitTerminal(ids, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range ids {
		if statuses[id] != "succeeded" {
			t.Fatalf("run %s: %s", id, statuses[id])
		}
		for s := 1; s <= 3; s++ {
			if n := gs.count(fmt.Sprintf("/k%d/s%d", i, s)); n != 1 {
				t.Errorf("/k%d/s%d called %d times, want 1", i, s, n)
			}
		}
	}
}

// TestPauseHoldsStepsAfterApproval: an approval decided while the workflow
// is paused is recorded, and the step after it is held until resume.
func TestPauseHoldsStepsAfterApproval(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "pause-apr")
	gs := newGateServer(t)
	review := engApproval("review", "1h", "reject")
	post := engHTTP("post", "GET", gs.URL+"/after-approval", "review")
	wf, _ := deployWorkflow(t, f, "paused-approval", engDef(nil, "steps.post.output.body", review, post))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	runID := engStart(t, operator, f, wf, map[string]any{})
	apr := engPendingApproval(t, operator, runID)
	operator.ok(mPause, map[string]any{"w": wf, "e": f.envID, "m": "REJECT", "r": "hold"})
	if d := operator.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE"}); str(d, "decideApproval.status") != "approved" {
		t.Fatalf("decideApproval while paused: %v", d)
	}
	waitQueueHandled(t, suiteRedis(t), "steps", runID)
	r := heldRun(t, operator, runID)
	if ev := stepEvents(r); slices.Contains(ev, "step.started:post") || gs.count("/after-approval") != 0 {
		t.Fatalf("post started while paused: %v", ev)
	}
	if st := stepOf(r, "post"); str(st, "status") != "queued" || r["queueReason"] != "PAUSED" {
		t.Fatalf("after the approval while paused: post %v, queueReason %v", st, r["queueReason"])
	}
	operator.ok(mResume, map[string]any{"w": wf, "e": f.envID})
	if r := waitRun(t, operator, runID, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
		t.Fatalf("run after resume: %v", r)
	}
	if n := gs.count("/after-approval"); n != 1 {
		t.Fatalf("post called %d times, want 1", n)
	}
}
