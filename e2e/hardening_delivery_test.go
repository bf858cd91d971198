package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// hangingReceiver holds the first request to each path until the test ends
// (the caller is killed while waiting) and answers later ones at once; it
// counts every arrival per path.
type hangingReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	arrivals map[string]int
	arrived  chan string
	release  chan struct{}
}

func newHangingReceiver(t *testing.T) *hangingReceiver {
	h := &hangingReceiver{arrivals: map[string]int{}, arrived: make(chan string, 100), release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.arrivals[r.URL.Path]++
		n := h.arrivals[r.URL.Path]
		h.mu.Unlock()
		h.arrived <- r.URL.Path
		if n == 1 {
			select {
			case <-r.Context().Done():
			case <-h.release:
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(func() { close(h.release); h.Close() })
	return h
}

func (h *hangingReceiver) count(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.arrivals[path]
}

// deliveryDefinition is one side-effect POST to url followed by a transform;
// delivery and onUncertain are left out when empty.
func deliveryDefinition(url, delivery, onUncertain string) map[string]any {
	post := map[string]any{"id": "post", "type": "http", "sideEffect": true, "timeout": "5m",
		"request": map[string]any{"method": "POST", "url": url, "body": map[string]any{"run": "{{ run.id }}"}}}
	if delivery != "" {
		post["delivery"] = delivery
	}
	if onUncertain != "" {
		post["onUncertain"] = onUncertain
	}
	return map[string]any{
		"schemaVersion": 1,
		"steps": []any{post,
			map[string]any{"id": "after", "type": "transform", "needs": []any{"post"}, "output": "steps.post.output.status"}},
		"output": "steps.after.output",
	}
}

const qDeliveryRun = `query($id: ID!) { node(id: $id) { ... on Run { id status error { class message stepID }
	steps { stepID status attempts error { class message } attemptList { number status sentAt error { class message } } } } } }`

// TestAtMostOnceDelivery SIGKILLs the only worker while three side-effect
// calls hang at their receiver: an at_most_once step is not sent again
// after the takeover and fails with class uncertain; one with
// onUncertain: "ask" waits for an operator, and approving sends it once
// more; the default (at_least_once) sends again under the same attempt and
// succeeds.
func TestAtMostOnceDelivery(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1) // its worker is SIGKILLed
	f := st.fixture(t, "amo")
	recv := newHangingReceiver(t)
	g := st.client(t, f.owner.token)

	wfFail, _ := deployWorkflow(t, f, "amo-fail", deliveryDefinition(recv.URL+"/fail", "at_most_once", ""))
	wfAsk, _ := deployWorkflow(t, f, "amo-ask", deliveryDefinition(recv.URL+"/ask", "at_most_once", "ask"))
	wfALO, _ := deployWorkflow(t, f, "alo", deliveryDefinition(recv.URL+"/alo", "", ""))
	start := func(wf string) string {
		return str(g.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	}
	runFail, runAsk, runALO := start(wfFail), start(wfAsk), start(wfALO)

	// Wait until all three calls are in flight, then kill the worker.
	seen := map[string]bool{}
	deadline := time.After(60 * time.Second)
	for len(seen) < 3 {
		select {
		case p := <-recv.arrived:
			seen[p] = true
		case <-deadline:
			t.Fatalf("calls in flight: %v; want /fail, /ask and /alo", seen)
		}
	}
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	defer dumpLogs(t, "amo worker", []*process{w, nw})

	// at_most_once, onUncertain fail (the default): the takeover fails the
	// step without calling again.
	r := waitRun(t, g, runFail, 2*time.Minute, "failed", "succeeded")
	r = get(g.ok(qDeliveryRun, map[string]any{"id": runFail}), "node").(map[string]any)
	if str(r, "status") != "failed" || str(r, "error.class") != "uncertain" || str(r, "error.stepID") != "post" {
		t.Errorf("at_most_once run: %v", r)
	}
	post := stepOf(r, "post")
	if str(post, "status") != "failed" || str(post, "error.class") != "uncertain" {
		t.Errorf("at_most_once step: %v", post)
	}
	atts, _ := post["attemptList"].([]any)
	if len(atts) != 1 || str(atts[0], "status") != "failed" || str(atts[0], "error.class") != "uncertain" || str(atts[0], "sentAt") == "" {
		t.Errorf("at_most_once attempts: %v", atts)
	}
	if n := recv.count("/fail"); n != 1 {
		t.Errorf("at_most_once receiver saw %d requests, want 1", n)
	}

	// onUncertain ask: an approval request appears; approving sends once
	// more (a new attempt) and the run succeeds.
	r = waitRun(t, g, runAsk, 2*time.Minute, "waiting", "failed", "succeeded")
	if str(r, "status") != "waiting" {
		t.Fatalf("ask run: %v", r)
	}
	if n := recv.count("/ask"); n != 1 {
		t.Errorf("ask receiver saw %d requests before the decision, want 1", n)
	}
	aprs := edges(g.ok(qEngApprovals, map[string]any{"r": runAsk}), "approvals")
	if len(aprs) != 1 || str(aprs[0], "stepID") != "post" {
		t.Fatalf("ask run approvals: %v", aprs)
	}
	g.ok(`mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`, map[string]any{"id": str(aprs[0], "id")})
	r = waitRun(t, g, runAsk, time.Minute, "succeeded", "failed")
	if str(r, "status") != "succeeded" {
		t.Errorf("ask run after approval: %v", r)
	}
	if n := recv.count("/ask"); n != 2 {
		t.Errorf("ask receiver saw %d requests, want 2 (one more after the approval)", n)
	}
	r = get(g.ok(qDeliveryRun, map[string]any{"id": runAsk}), "node").(map[string]any)
	if atts, _ := stepOf(r, "post")["attemptList"].([]any); len(atts) != 2 || str(atts[0], "error.class") != "uncertain" || str(atts[1], "status") != "succeeded" {
		t.Errorf("ask attempts: %v", atts)
	}

	// at_least_once: sent again under the same attempt, and succeeds.
	r = waitRun(t, g, runALO, 2*time.Minute, "succeeded", "failed")
	if str(r, "status") != "succeeded" {
		t.Errorf("at_least_once run: %v", r)
	}
	if n := recv.count("/alo"); n != 2 {
		t.Errorf("at_least_once receiver saw %d requests, want 2", n)
	}
}

// TestAtMostOnceValidation: delivery and onUncertain are checked at create.
func TestAtMostOnceValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "amo-bad")
	c := newClient(t, 1, f.owner.token)
	wfID := str(c.ok(mCreateWF, map[string]any{"n": "AMO", "s": "amo-bad"}), "createWorkflow.id")
	httpStep := func(extra string) string {
		return defSteps(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example/"}` + extra + `}`)
	}
	for i, tt := range []struct{ name, doc, path string }{
		{"delivery without sideEffect", httpStep(`,"delivery":"at_most_once"`), "$.steps[0].delivery"},
		{"unknown delivery", httpStep(`,"sideEffect":true,"delivery":"exactly_once"`), "$.steps[0].delivery"},
		{"unknown onUncertain", httpStep(`,"sideEffect":true,"delivery":"at_most_once","onUncertain":"retry"`), "$.steps[0].onUncertain"},
		{"onUncertain without at_most_once", httpStep(`,"sideEffect":true,"onUncertain":"ask"`), "$.steps[0].onUncertain"},
		{"delivery on a transform", defSteps(`{"id":"a","type":"transform","output":"1","delivery":"at_most_once"}`), "$.steps[0].delivery"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newClient(t, i, f.owner.token).fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, tt.doc)})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
		})
	}
	c.ok(mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, httpStep(`,"sideEffect":true,"delivery":"at_most_once","onUncertain":"ask"`))})
	c.ok(mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, httpStep(`,"sideEffect":true,"delivery":"at_least_once"`))})
}

// TestAtMostOnceFailureRule: without any crash, an at_most_once call that
// got an answer the default would retry (503) is not sent again and fails
// as uncertain, while one that certainly was not sent (connection
// refused) is retried like any transient failure.
func TestAtMostOnceFailureRule(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "amo-rule")
	srv := newScriptServer(t)
	srv.script("/busy", reply{Status: 503, Body: map[string]any{"busy": true}}, reply{Status: 200, Body: map[string]any{"ok": true}})
	closed := httptest.NewServer(http.NotFoundHandler())
	refused := closed.URL
	closed.Close()

	def := func(url string) map[string]any {
		d := deliveryDefinition(url, "at_most_once", "")
		post := d["steps"].([]any)[0].(map[string]any)
		post["timeout"] = "5s"
		post["retry"] = map[string]any{"maxAttempts": 2, "initialInterval": "1s"}
		return d
	}
	wfBusy, _ := deployWorkflow(t, f, "amo-busy", def(srv.URL+"/busy"))
	wfRefused, _ := deployWorkflow(t, f, "amo-refused", def(refused+"/x"))
	start := func(wf string) string {
		return str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	}
	busy, ref := start(wfBusy), start(wfRefused)

	r := waitRun(t, f.owner, busy, time.Minute, "failed", "succeeded")
	if str(r, "status") != "failed" || str(r, "error.class") != "uncertain" || !strings.Contains(str(r, "error.message"), "status 503") {
		t.Errorf("503 under at_most_once: %v", r)
	}
	if n := len(srv.calls("/busy")); n != 1 {
		t.Errorf("receiver answered 503 and was called %d times, want 1", n)
	}
	r = waitRun(t, f.owner, ref, time.Minute, "failed", "succeeded")
	post := stepOf(r, "post")
	if str(r, "status") != "failed" || str(post, "error.class") != "transient" || get(post, "attempts") != float64(2) {
		t.Errorf("connection refused under at_most_once: want 2 attempts, transient: %v", post)
	}
}
