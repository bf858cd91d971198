package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Wait steps and outside events, through GraphQL and the callback URL:
// sendEvent resumes a waiting run (once per event id), a callback works
// once, timeouts follow onTimeout, an event that came before the wait
// began is taken, another tenant's events never match, and the timeout
// survives a worker killed with Redis wiped.

const (
	mSendEvent = `mutation($e: ID!, $n: String!, $d: Map, $id: String) { sendEvent(input: {environmentID: $e, name: $n, data: $d, id: $id}) {
		duplicate resumed event { id name dedupeID data receivedAt environment { id } } } }`
	qWaitRun = `query($id: ID!) { node(id: $id) { ... on Run { id status output error { class message stepID }
		steps { stepID status output error { class message } }
		events { seq type stepID data } } } }`
	qInboundEvents = `{ inboundEvents(first: 50) { totalCount edges { node { id name data } } } }`
)

// waitDefinition: prep -> paid (waits for "paid" of the run's order) -> after (its output).
func waitDefinition(timeout, onTimeout string, needs ...string) map[string]any {
	paid := map[string]any{"id": "paid", "type": "wait", "needs": append([]string{"prep"}, needs...), "event": "payment.settled",
		"match": "event.data.order == input.order"}
	if timeout != "" {
		paid["timeout"] = timeout
	}
	if onTimeout != "" {
		paid["onTimeout"] = onTimeout
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"order": map[string]any{"type": "string"}}},
		"steps": []any{
			map[string]any{"id": "prep", "type": "transform", "output": "1"},
			paid,
			map[string]any{"id": "after", "type": "transform", "needs": []any{"paid"}, "output": "steps.paid.output"},
		},
		"output": "steps.after.output",
	}
}

// waitingRun starts a run of wf for order and waits until its wait step
// waits; it returns the run id and the step.waiting event's data as c sees it.
func waitingRun(t *testing.T, c *client, f *fixture, wf, order string) (string, map[string]any) {
	t.Helper()
	id := engStart(t, c, f, wf, map[string]any{"order": order})
	var data map[string]any
	eventually(t, engWait, func() (bool, string) {
		run, _ := get(c.ok(qWaitRun, map[string]any{"id": id}), "node").(map[string]any)
		for _, e := range run["events"].([]any) {
			if str(e, "type") == "step.waiting" && str(e, "stepID") == "paid" {
				data, _ = get(e, "data").(map[string]any)
			}
		}
		return data != nil && run["status"] == "waiting", fmt.Sprintf("run %s: %v", id, run["status"])
	})
	return id, data
}

func sendEvent(c *client, envID, name string, data map[string]any, id string) map[string]any {
	vars := map[string]any{"e": envID, "n": name, "d": data}
	if id != "" {
		vars["id"] = id
	}
	return get(c.ok(mSendEvent, vars), "sendEvent").(map[string]any)
}

func waitRunNode(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	run, _ := get(c.ok(qWaitRun, map[string]any{"id": id}), "node").(map[string]any)
	return run
}

// TestWaitStepSendEvent: sendEvent resumes the run whose match holds; the
// payload is the step's output; the same id twice resumes once.
func TestWaitStepSendEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-send")
	wf, _ := deployWorkflow(t, f, "wait-send", waitDefinition("1h", ""))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	id, waiting := waitingRun(t, operator, f, wf, "o-1")
	if waiting["event"] != "payment.settled" || !strings.HasPrefix(str(waiting, "callbackURL"), "/callbacks/"+f.tenantID+".") || waiting["expiresAt"] == nil {
		t.Errorf("step.waiting data: %v", waiting)
	}

	// Another order's event and another name resume nothing.
	if d := sendEvent(operator, f.envID, "payment.settled", map[string]any{"order": "o-2"}, ""); d["resumed"] != float64(0) {
		t.Fatalf("another order: %v", d)
	}
	if d := sendEvent(operator, f.envID, "payment.failed", map[string]any{"order": "o-1"}, ""); d["resumed"] != float64(0) {
		t.Fatalf("another name: %v", d)
	}
	if r := waitRunNode(t, operator, id); r["status"] != "waiting" {
		t.Fatalf("run moved on without its event: %v", r["status"])
	}
	d := sendEvent(operator, f.envID, "payment.settled", map[string]any{"order": "o-1", "amount": 120}, "stripe-evt-1")
	if d["resumed"] != float64(1) || d["duplicate"] != false || str(d, "event.dedupeID") != "stripe-evt-1" || str(d, "event.environment.id") != f.envID {
		t.Fatalf("sendEvent: %v", d)
	}
	eventID := str(d, "event.id")
	again := sendEvent(operator, f.envID, "payment.settled", map[string]any{"order": "o-1", "amount": 999}, "stripe-evt-1")
	if again["duplicate"] != true || again["resumed"] != float64(0) || str(again, "event.id") != eventID || get(again, "event.data.amount") != float64(120) {
		t.Fatalf("duplicate: %v", again)
	}
	run := engFinish(t, operator, id, "succeeded")
	out, _ := run["output"].(map[string]any)
	if out["event"] != "payment.settled" || out["id"] != "stripe-evt-1" || get(out, "data.amount") != float64(120) || out["receivedAt"] == nil {
		t.Errorf("run output: %v", run["output"])
	}
	if got := stepOf(run, "paid")["output"]; fmt.Sprint(got) != fmt.Sprint(out) {
		t.Errorf("paid output %v, want the payload %v", got, out)
	}
	if n := engCountEvents(run, "step.succeeded"); n != 3 {
		t.Errorf("events: %v", eventTypes(run))
	}
	// The duplicate stored nothing: three events, and three audit entries.
	if n := get(operator.ok(qInboundEvents, nil), "inboundEvents.totalCount"); n != float64(3) {
		t.Errorf("inbound events: %v", n)
	}
	logs := edges(f.owner.ok(`{ auditLogs(where: {action: "event.send"}) { edges { node { targetID metadata } } } }`, nil), "auditLogs")
	if len(logs) != 3 {
		t.Errorf("event.send audit entries: %v", logs)
	}
	// A viewer sees the events but neither sends them nor sees callback URLs.
	viewer := newClient(t, 0, token(t, f.tenantID, "viewer"))
	viewer.fail("FORBIDDEN", mSendEvent, map[string]any{"e": f.envID, "n": "payment.settled"})
	for _, e := range waitRunNode(t, viewer, id)["events"].([]any) {
		if get(e, "data.callbackURL") != nil {
			t.Errorf("a viewer sees a callback URL: %v", e)
		}
	}
}

// TestWaitStepCallback: the callback URL resolves the wait once; then it
// answers 410, and a token that names nothing 404.
func TestWaitStepCallback(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-cb")
	wf, _ := deployWorkflow(t, f, "wait-cb", waitDefinition("1h", ""))
	id, waiting := waitingRun(t, f.owner, f, wf, "o-1")
	url := server(1).url + str(waiting, "callbackURL")
	post := func(u, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(u, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(url, `[1, 2]`); code != http.StatusBadRequest {
		t.Errorf("a body that is no object: %d %s", code, body)
	}
	if code, body := post(url, `{"x": "`+strings.Repeat("a", 300<<10)+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("an oversized body: %d %s", code, body)
	}
	if code, body := post(server(0).url+"/callbacks/"+f.tenantID+"."+strings.Repeat("A", 43), `{}`); code != http.StatusNotFound {
		t.Errorf("a token of no wait: %d %s", code, body)
	}
	if code, body := post(server(0).url+"/callbacks/nonsense", `{}`); code != http.StatusNotFound {
		t.Errorf("a malformed token: %d %s", code, body)
	}
	if r := waitRunNode(t, f.owner, id); r["status"] != "waiting" {
		t.Fatalf("refused callbacks moved the run: %v", r["status"])
	}
	if code, body := post(url, `{"status": "signed", "by": "ada"}`); code != http.StatusOK {
		t.Fatalf("callback: %d %s", code, body)
	}
	if code, body := post(url, `{"status": "again"}`); code != http.StatusGone {
		t.Errorf("second callback: %d %s", code, body)
	}
	run := engFinish(t, f.owner, id, "succeeded")
	if get(run, "output.data.status") != "signed" || get(run, "output.event") != "payment.settled" {
		t.Errorf("output: %v", run["output"])
	}
	if strings.Contains(allLogs(), strings.TrimPrefix(str(waiting, "callbackURL"), "/callbacks/")) {
		t.Error("the callback token is in the API's logs")
	}
}

// TestWaitStepTimeout: a wait whose event never comes follows onTimeout:
// fail (class timeout) or continue ({"timedOut": true}); resuming a run
// failed that way waits again.
func TestWaitStepTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-timeout")
	for _, onTimeout := range []string{"fail", "continue"} {
		t.Run(onTimeout, func(t *testing.T) {
			t.Parallel()
			wf, _ := deployWorkflow(t, f, "wait-timeout-"+onTimeout, waitDefinition("2s", onTimeout))
			id, waiting := waitingRun(t, f.owner, f, wf, "o-"+onTimeout)
			if onTimeout == "continue" {
				run := engFinish(t, f.owner, id, "succeeded")
				if get(run, "output.timedOut") != true || get(stepOf(run, "paid"), "output.timedOut") != true {
					t.Errorf("output: %v", run["output"])
				}
				return
			}
			run := engFinish(t, f.owner, id, "failed")
			if get(run, "error.class") != "timeout" || get(run, "error.stepID") != "paid" || !strings.Contains(str(run, "error.message"), "payment.settled") {
				t.Fatalf("error: %v", run["error"])
			}
			engNeverRan(t, run, "after")
			resp, err := http.Post(server(0).url+str(waiting, "callbackURL"), "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGone {
				t.Errorf("callback after the timeout: %d", resp.StatusCode)
			}
			// Resumed, it waits again, and an event ends it.
			f.owner.ok(mEngResume, map[string]any{"id": id})
			eventually(t, engWait, func() (bool, string) {
				n := 0
				for _, e := range waitRunNode(t, f.owner, id)["events"].([]any) {
					if str(e, "type") == "step.waiting" {
						n++
					}
				}
				return n == 2, fmt.Sprintf("%d step.waiting events", n)
			})
			if d := sendEvent(f.owner, f.envID, "payment.settled", map[string]any{"order": "o-fail"}, ""); d["resumed"] != float64(1) {
				t.Fatalf("sendEvent after resume: %v", d)
			}
			engFinish(t, f.owner, id, "succeeded")
		})
	}
}

// TestWaitStepTakesAnEarlierEvent: an event sent after the run started but
// before its wait began (the wait needs an approval) is taken when it
// begins; one sent before the run started is not.
func TestWaitStepTakesAnEarlierEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-early")
	def := waitDefinition("1h", "", "review")
	def["steps"] = append(def["steps"].([]any), map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}})
	wf, _ := deployWorkflow(t, f, "wait-early", def)
	sendEvent(f.owner, f.envID, "payment.settled", map[string]any{"order": "o-1", "n": 0}, "")
	id := engStart(t, f.owner, f, wf, map[string]any{"order": "o-1"})
	apr := engPendingApproval(t, f.owner, id)
	if d := sendEvent(f.owner, f.envID, "payment.settled", map[string]any{"order": "o-1", "n": 1}, ""); d["resumed"] != float64(0) {
		t.Fatalf("resumed a wait that had not begun: %v", d)
	}
	f.owner.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE"})
	run := engFinish(t, f.owner, id, "succeeded")
	if get(run, "output.data.n") != float64(1) {
		t.Errorf("took %v, want the event sent after the run started", run["output"])
	}
	if engCountEvents(run, "step.waiting") != 0 {
		t.Errorf("it waited: %v", eventTypes(run))
	}
}

// TestWaitStepCrossTenant: another tenant's events never match, and another
// tenant cannot see or send to this tenant's events.
func TestWaitStepCrossTenant(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "wait-a"), newFixture(t, "wait-b")
	wf, _ := deployWorkflow(t, a, "wait-x", waitDefinition("1h", ""))
	id, _ := waitingRun(t, a.owner, a, wf, "o-1")
	mine := sendEvent(a.owner, a.envID, "payment.failed", map[string]any{"order": "o-1"}, "shared-id")
	// B's event of the same name, data and id: its own, and it resumes nothing of A's.
	d := sendEvent(b.owner, b.envID, "payment.settled", map[string]any{"order": "o-1"}, "shared-id")
	if d["resumed"] != float64(0) || d["duplicate"] != false {
		t.Fatalf("B's event: %v", d)
	}
	if r := waitRunNode(t, a.owner, id); r["status"] != "waiting" {
		t.Fatalf("A's run took B's event: %v", r["status"])
	}
	// B cannot send into A's environment nor see A's events.
	r := b.owner.fail("NOT_FOUND", mSendEvent, map[string]any{"e": a.envID, "n": "payment.settled", "d": map[string]any{"order": "o-1"}})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "input.environmentID" {
		t.Errorf("path: %s", r.Raw)
	}
	if n := get(b.owner.ok(qInboundEvents, nil), "inboundEvents.totalCount"); n != float64(1) {
		t.Errorf("B sees %v events, want its own 1", n)
	}
	if node := get(b.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": str(mine, "event.id")}), "node"); node != nil {
		t.Errorf("B reads A's event: %v", node)
	}
	if d := sendEvent(a.owner, a.envID, "payment.settled", map[string]any{"order": "o-1"}, ""); d["resumed"] != float64(1) {
		t.Fatalf("A's event: %v", d)
	}
	engFinish(t, a.owner, id, "succeeded")
}

// TestWaitStepBadInput: bad events and bad wait steps are refused with
// VALIDATION at their path (an unknown environment NOT_FOUND, like every
// reference), and nothing is written.
func TestWaitStepBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-bad")
	wait := func(mut func(map[string]any)) map[string]any {
		d := waitDefinition("1h", "")
		mut(d["steps"].([]any)[1].(map[string]any))
		return d
	}
	versionsBefore := get(f.owner.ok(`query($w: ID!) { node(id: $w) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"w": f.workflowID}), "node.versions.totalCount")
	for _, tc := range []struct {
		name, query string
		vars        map[string]any
		code, path  string
	}{
		{"empty name", mSendEvent, map[string]any{"e": f.envID, "n": ""}, "VALIDATION", "input.name"},
		{"bad name", mSendEvent, map[string]any{"e": f.envID, "n": "Payment Settled"}, "VALIDATION", "input.name"},
		{"oversized data", mSendEvent, map[string]any{"e": f.envID, "n": "x", "d": map[string]any{"s": strings.Repeat("a", 300<<10)}}, "VALIDATION", "input.data"},
		{"empty id", mSendEvent, map[string]any{"e": f.envID, "n": "x", "id": ""}, "VALIDATION", "input.id"},
		{"unknown environment", mSendEvent, map[string]any{"e": "env_01aaaaaaaaaaaaaaaaaaaaaaaa", "n": "x"}, "NOT_FOUND", "input.environmentID"},
		{"bad match", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["match"] = "event.data.(" })}, "VALIDATION", "$.steps[1].match"},
		{"match not bool", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["match"] = "'yes'" })}, "VALIDATION", "$.steps[1].match"},
		{"bad timeout", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["timeout"] = "forever" })}, "VALIDATION", "$.steps[1].timeout"},
		{"timeout too long", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["timeout"] = "800h" })}, "VALIDATION", "$.steps[1].timeout"},
		{"bad onTimeout", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["onTimeout"] = "reject" })}, "VALIDATION", "$.steps[1].onTimeout"},
		{"no event", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { delete(s, "event") })}, "VALIDATION", "$.steps[1].event"},
		{"unknown step type", mCreateVer, map[string]any{"w": f.workflowID, "d": wait(func(s map[string]any) { s["type"] = "sleep" })}, "VALIDATION", "$.steps[1].type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newClient(t, 0, f.owner.token).fail(tc.code, tc.query, tc.vars)
			paths := []string{}
			list, _ := r.Errors[0].Extensions["problems"].([]any)
			for _, p := range list {
				paths = append(paths, str(p, "path"))
			}
			p, _ := r.Errors[0].Extensions["path"].(string)
			if p != tc.path && !strings.Contains(strings.Join(paths, " "), tc.path) {
				t.Errorf("want path %s, got %q %v: %s", tc.path, p, paths, r.Raw)
			}
		})
	}
	if n := get(f.owner.ok(qInboundEvents, nil), "inboundEvents.totalCount"); n != float64(0) {
		t.Errorf("stored %v events", n)
	}
	after := get(f.owner.ok(`query($w: ID!) { node(id: $w) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"w": f.workflowID}), "node.versions.totalCount")
	if fmt.Sprint(after) != fmt.Sprint(versionsBefore) {
		t.Errorf("versions written: %v, before %v", after, versionsBefore)
	}
}

// TestWaitStepTimeoutSurvivesWorkerKillAndRedisWipe: a wait's timeout lives
// in Postgres: with its worker SIGKILLed and Redis wiped while it waits, a
// new worker's reconciler still fires it.
func TestWaitStepTimeoutSurvivesWorkerKillAndRedisWipe(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1) // its worker is SIGKILLed
	f := st.fixture(t, "wait-durable")
	wf, _ := deployWorkflow(t, f, "wait-durable", waitDefinition("3s", "continue"))
	g := f.owner.on(st.server)
	id, _ := waitingRun(t, g, f, wf, "o-1")
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	rdb := st.redis()
	defer rdb.Close()
	ctx := context.Background()
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n == 0 {
		t.Fatalf("Redis held %d keys (%v): the wipe would prove nothing", n, err)
	}
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	defer dumpLogs(t, "wait worker", []*process{w, nw})
	run := waitRun(t, g, id, 60*time.Second, "succeeded", "failed")
	if run["status"] != "succeeded" || get(run, "output.timedOut") != true {
		t.Fatalf("run: %v %v", run["status"], run["output"])
	}
	if !strings.Contains(nw.Logs(), `"msg":"reconciled"`) {
		t.Error("the new worker never re-sent due work: the timeout came from elsewhere")
	}
}

// TestWaitStepEnvironmentScope: a key scoped to one environment sends
// events there only and sees only that environment's events; an event id
// is deduplicated across the tenant, and reused in another environment it
// is CONFLICT.
func TestWaitStepEnvironmentScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-scope")
	prod := sendEvent(f.owner, f.prodEnvID, "deploy.done", map[string]any{"v": 1}, "shared")
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-ops", roles: [OPERATOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	scoped.fail("NOT_FOUND", mSendEvent, map[string]any{"e": f.prodEnvID, "n": "deploy.done"})
	r := scoped.fail("CONFLICT", mSendEvent, map[string]any{"e": f.envID, "n": "deploy.done", "id": "shared"})
	if strings.Contains(r.Raw, str(prod, "event.id")) {
		t.Errorf("the conflict names the other environment's event: %s", r.Raw)
	}
	mine := sendEvent(scoped, f.envID, "deploy.done", map[string]any{"v": 2}, "")
	list := edges(scoped.ok(qInboundEvents, nil), "inboundEvents")
	if len(list) != 1 || list[0]["id"] != str(mine, "event.id") {
		t.Errorf("scoped key sees %v", list)
	}
	if n := get(scoped.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": str(prod, "event.id")}), "node"); n != nil {
		t.Errorf("scoped key reads another environment's event: %v", n)
	}
	if n := get(f.owner.ok(qInboundEvents, nil), "inboundEvents.totalCount"); n != float64(2) {
		t.Errorf("owner sees %v events", n)
	}
}

// TestWaitEventNumbersAreInts: an event's integral numbers reach the
// steps after the wait as CEL ints, as any other JSON does.
func TestWaitEventNumbersAreInts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "wait-int")
	def := waitDefinition("1h", "")
	def["steps"].([]any)[2] = map[string]any{"id": "after", "type": "transform", "needs": []any{"paid"}, "output": "steps.paid.output.data.amount * 2"}
	wf, _ := deployWorkflow(t, f, "wait-int", def)
	id, _ := waitingRun(t, f.owner, f, wf, "o-1")
	if d := sendEvent(f.owner, f.envID, "payment.settled", map[string]any{"order": "o-1", "amount": 120}, ""); d["resumed"] != float64(1) {
		t.Fatalf("sendEvent: %v", d)
	}
	run := engFinish(t, f.owner, id, "succeeded")
	if run["output"] != float64(240) {
		t.Fatalf("output %v, want 240", run["output"])
	}
}
