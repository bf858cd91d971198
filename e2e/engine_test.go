package e2e

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sluicehq/sluice/internal/tasks"
)

// The engine tests drive whole runs through the real processes: http steps
// against scriptServer, llm steps against fakeOpenAI, approvals decided over
// GraphQL, and the run's state read back as a client would.

const (
	engWait = 30 * time.Second

	qEngRun = `query($id: ID!) { node(id: $id) { ... on Run { id status mode replayOf failedStepID idempotencyKey output version { number }
		error { class message stepID }
		steps { stepID status attempts output error { class message } attemptList { id number status error { class message } } }
		events { seq type stepID attempt data } } } }`
	qEngApprovals  = `query($r: ID!) { approvals(where: {runID: $r, status: pending}) { edges { node { id runID stepID status } } } }`
	qEngApproval   = `query($id: ID!) { node(id: $id) { ... on ApprovalRequest { id status decidedBy comment } } }`
	qEngRunCount   = `query($w: ID!) { runs(where: {workflowID: $w}) { totalCount edges { node { id } } } }`
	mEngDecide     = `mutation($id: ID!, $d: ApprovalDecision!, $c: String) { decideApproval(input: {id: $id, decision: $d, comment: $c}) { id status decidedBy } }`
	mEngCancel     = `mutation($id: ID!) { cancelRun(id: $id) { id status } }`
	mEngResume     = `mutation($id: ID!) { resumeRun(id: $id) { id status } }`
	mEngReplay     = `mutation($id: ID!, $m: ReplayMode) { replayRun(input: {runID: $id, mode: $m}) { id status mode replayOf } }`
	qEngDeadLetter = `query($w: ID) { deadLetter(workflowID: $w) { class count runs { id status error { class } } } }`
)

// engRetry is the retry policy the flaky-API tests use.
var engRetry = map[string]any{"maxAttempts": 5, "initialInterval": "1s", "maxInterval": "2s", "backoffCoefficient": 2}

// engDef builds a definition from its steps; output may be "".
func engDef(input map[string]any, output string, steps ...map[string]any) map[string]any {
	list := make([]any, len(steps))
	for i, s := range steps {
		list[i] = s
	}
	d := map[string]any{"schemaVersion": 1, "steps": list}
	if input != nil {
		d["input"] = input
	}
	if output != "" {
		d["output"] = output
	}
	return d
}

// engHTTP is an http step.
func engHTTP(id, method, url string, needs ...string) map[string]any {
	s := map[string]any{"id": id, "type": "http", "request": map[string]any{"method": method, "url": url}}
	if len(needs) > 0 {
		s["needs"] = needs
	}
	return s
}

// engApproval is an approval step operators decide.
func engApproval(id, timeout, onTimeout string, needs ...string) map[string]any {
	s := map[string]any{"id": id, "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": timeout}
	if onTimeout != "" {
		s["onTimeout"] = onTimeout
	}
	if len(needs) > 0 {
		s["needs"] = needs
	}
	return s
}

// engCredential creates a credential in f's development environment.
func engCredential(t *testing.T, f *fixture, name, typ string, secret map[string]any) {
	t.Helper()
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": name, "t": typ, "s": secret})
}

// engStart starts a run of wf in f's development environment.
func engStart(t *testing.T, c *client, f *fixture, wf string, input map[string]any) string {
	t.Helper()
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": input}), "startRun.id")
	if id == "" {
		t.Fatal("startRun returned no id")
	}
	return id
}

// engRun reads a run with everything the engine tests look at.
func engRun(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	run, _ := get(c.ok(qEngRun, map[string]any{"id": id}), "node").(map[string]any)
	if run == nil {
		t.Fatalf("run %s not found", id)
	}
	return run
}

// engFinish waits for a run to reach one of want (failing on any other
// terminal status) and returns it in full.
func engFinish(t *testing.T, c *client, id string, want ...string) map[string]any {
	t.Helper()
	r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled")
	for _, w := range want {
		if r["status"] == w {
			return engRun(t, c, id)
		}
	}
	t.Fatalf("run %s ended %v, want %v: %v", id, r["status"], want, engRun(t, c, id))
	return nil
}

// engPendingApproval waits until the run has a pending approval, found
// through the approvals query as an operator would, and returns its id.
func engPendingApproval(t *testing.T, c *client, runID string) string {
	t.Helper()
	var list []map[string]any
	eventually(t, engWait, func() (bool, string) {
		list = edges(c.ok(qEngApprovals, map[string]any{"r": runID}), "approvals")
		return len(list) > 0, fmt.Sprintf("run %s has no pending approval", runID)
	})
	if len(list) > 1 {
		t.Fatalf("run %s has %d pending approvals: %v", runID, len(list), list)
	}
	if list[0]["runID"] != runID || list[0]["status"] != "pending" {
		t.Fatalf("approval: %v", list[0])
	}
	return list[0]["id"].(string)
}

// engCalls returns the requests s received with exactly method and path.
func engCalls(s *scriptServer, method, path string) []recorded {
	var out []recorded
	for _, r := range s.calls(path) {
		if r.Path == path && r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

// engCount fails t unless s received exactly n requests of method on path.
func engCount(t *testing.T, s *scriptServer, method, path string, n int) []recorded {
	t.Helper()
	got := engCalls(s, method, path)
	if len(got) != n {
		t.Fatalf("%s %s received %d times, want %d: %v", method, path, len(got), n, got)
	}
	return got
}

// engCountEvents counts a run's events of type typ.
func engCountEvents(run map[string]any, typ string) int {
	n := 0
	for _, e := range eventTypes(run) {
		if e == typ {
			n++
		}
	}
	return n
}

// engEvent returns the first event of type typ.
func engEvent(run map[string]any, typ string) map[string]any {
	list, _ := run["events"].([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["type"] == typ {
			return m
		}
	}
	return nil
}

// engAttempts returns the attemptList of a step.
func engAttempts(t *testing.T, run map[string]any, stepID string) []map[string]any {
	t.Helper()
	st := stepOf(run, stepID)
	if st == nil {
		t.Fatalf("run has no step %s: %v", stepID, run)
	}
	var out []map[string]any
	list, _ := st["attemptList"].([]any)
	for _, a := range list {
		out = append(out, a.(map[string]any))
	}
	return out
}

// engNeverRan fails t if a step of a finished run started: it is pending
// (never reached) or cancelled, with no attempt.
func engNeverRan(t *testing.T, run map[string]any, stepID string) {
	t.Helper()
	st := stepOf(run, stepID)
	if st == nil || (st["status"] != "pending" && st["status"] != "cancelled") || st["attempts"] != float64(0) || len(st["attemptList"].([]any)) != 0 {
		t.Errorf("step %s should never have run: %v", stepID, st)
	}
}

// engConcurrently sends n requests at once as c (alternating API processes)
// and returns their results in order.
func engConcurrently(t *testing.T, n int, c *client, req func(i int) (string, map[string]any)) []*result {
	t.Helper()
	results := make([]*result, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		q, vars := req(i)
		on := c.on(server(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = on.try(q, vars)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return results
}

// engJSONBody decodes a recorded request body.
func engJSONBody(t *testing.T, r recorded) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("%s %s body is not JSON: %q", r.Method, r.Path, r.Body)
	}
	return m
}

// TestEngineFiveStepWorkflow runs http (bearer credential), llm (fake
// OpenAI), transform, approval and a side-effecting POST end to end.
func TestEngineFiveStepWorkflow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-five")
	srv := newScriptServer(t)
	ai := newFakeOpenAI(t, "urgent: hardware")
	crmToken := "crm-token-" + randHex(8)
	engCredential(t, f, "crm5", "bearer", map[string]any{"token": crmToken})
	engCredential(t, f, "openai", "openai", map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"})
	srv.script("/crm/tickets/T-42", reply{Status: 200, Body: map[string]any{"subject": "Printer on fire", "priority": "high"}})
	srv.script("/crm/notes", reply{Status: 201, Body: map[string]any{"noteId": "n-1"}})

	fetch := engHTTP("fetch", "GET", srv.URL+"/crm/tickets/{{ input.ticketId }}")
	fetch["credential"] = "crm5"
	fetch["expect"] = map[string]any{"status": []any{200}, "schema": map[string]any{"type": "object", "required": []any{"subject"}}}
	classify := map[string]any{"id": "classify", "type": "llm", "needs": []any{"fetch"}, "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 200,
		"messages": []any{map[string]any{"role": "user", "content": "Classify: {{ steps.fetch.output.body.subject }}"}}}
	shape := map[string]any{"id": "shape", "type": "transform", "needs": []any{"classify"},
		"output": map[string]any{"ticket": "input.ticketId", "label": "steps.classify.output.text", "subject": "steps.fetch.output.body.subject"}}
	review := engApproval("review", "1h", "reject", "shape")
	post := engHTTP("post", "POST", srv.URL+"/crm/notes", "review")
	post["sideEffect"] = true
	post["request"].(map[string]any)["body"] = map[string]any{"text": "{{ steps.shape.output.label }}", "ticket": "{{ input.ticketId }}", "about": "{{ steps.fetch.output.body.subject }}"}
	input := map[string]any{"type": "object", "required": []any{"ticketId"}, "properties": map[string]any{"ticketId": map[string]any{"type": "string"}}}
	wf, _ := deployWorkflow(t, f, "five", engDef(input, "steps.shape.output", fetch, classify, shape, review, post))

	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	runID := engStart(t, operator, f, wf, map[string]any{"ticketId": "T-42"})
	apr := engPendingApproval(t, operator, runID)
	if st := waitRun(t, operator, runID, engWait, "waiting")["status"]; st != "waiting" {
		t.Fatalf("status %v while the approval is pending", st)
	}
	engCount(t, srv, "POST", "/crm/notes", 0) // nothing after the approval ran yet
	d := operator.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE", "c": "looks right"})
	if str(d, "decideApproval.status") != "approved" {
		t.Fatalf("decideApproval: %v", d)
	}
	run := engFinish(t, f.owner, runID, "succeeded")

	// The GET carried the bearer credential.
	gets := engCount(t, srv, "GET", "/crm/tickets/T-42", 1)
	if h := gets[0].Header.Get("Authorization"); h != "Bearer "+crmToken {
		t.Errorf("GET Authorization = %q, want the bearer credential", h)
	}
	if body := get(stepOf(run, "fetch"), "output.body"); !reflect.DeepEqual(body, map[string]any{"subject": "Printer on fire", "priority": "high"}) {
		t.Errorf("fetch output body: %v", body)
	}
	if s := get(stepOf(run, "fetch"), "output.status"); s != float64(200) {
		t.Errorf("fetch output status: %v", s)
	}

	// The model saw the interpolated prompt; its text and usage are the output.
	calls := ai.Calls()
	if len(calls) != 1 {
		t.Fatalf("fake OpenAI called %d times", len(calls))
	}
	if c := get(calls[0]["messages"].([]any)[0], "content"); c != "Classify: Printer on fire" {
		t.Errorf("prompt: %v", c)
	}
	if calls[0]["model"] != "gpt-4o-mini" {
		t.Errorf("model: %v", calls[0]["model"])
	}
	llm := stepOf(run, "classify")
	if get(llm, "output.text") != "urgent: hardware" || get(llm, "output.usage.inputTokens") != float64(120) || get(llm, "output.usage.outputTokens") != float64(30) {
		t.Errorf("classify output: %v", llm["output"])
	}

	wantShape := map[string]any{"ticket": "T-42", "label": "urgent: hardware", "subject": "Printer on fire"}
	if !reflect.DeepEqual(get(stepOf(run, "shape"), "output"), wantShape) {
		t.Errorf("shape output: %v", get(stepOf(run, "shape"), "output"))
	}
	if !reflect.DeepEqual(run["output"], wantShape) {
		t.Errorf("run output: %v", run["output"])
	}
	rv := stepOf(run, "review")
	if get(rv, "output.approved") != true || get(rv, "output.decidedBy") != "user-operator@e2e.test" || get(rv, "output.timedOut") != false {
		t.Errorf("review output: %v", rv["output"])
	}
	if a := get(operator.ok(qEngApproval, map[string]any{"id": apr}), "node"); get(a, "status") != "approved" || get(a, "comment") != "looks right" {
		t.Errorf("approval after decision: %v", a)
	}

	// The side effect went out once, with an idempotency key and the body
	// built from earlier steps.
	posts := engCount(t, srv, "POST", "/crm/notes", 1)
	if posts[0].IdempotencyKey == "" {
		t.Error("side-effect POST carried no Idempotency-Key")
	}
	if got := engJSONBody(t, posts[0]); !reflect.DeepEqual(got, map[string]any{"text": "urgent: hardware", "ticket": "T-42", "about": "Printer on fire"}) {
		t.Errorf("POST body: %v", got)
	}
	if s := get(stepOf(run, "post"), "output.status"); s != float64(201) {
		t.Errorf("post output: %v", stepOf(run, "post")["output"])
	}
	for _, id := range []string{"fetch", "classify", "shape", "review", "post"} {
		if st := stepOf(run, id); st["status"] != "succeeded" {
			t.Errorf("step %s: %v", id, st)
		}
	}
	types := eventTypes(run)
	if types[0] != "run.queued" || types[len(types)-1] != "run.succeeded" || engCountEvents(run, "approval.requested") != 1 || engCountEvents(run, "approval.decided") != 1 {
		t.Errorf("events: %v", types)
	}
}

// TestEngineRetries covers failure classes: transient errors retry with
// backoff, Retry-After is honoured, 4xx fails at once, a body that breaks
// expect.schema is schema drift, and failed runs land in the dead letter view.
func TestEngineRetries(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-retry")
	srv := newScriptServer(t)
	flaky := func(t *testing.T, slug, path string, expect map[string]any) (string, string) {
		st := engHTTP("call", "GET", srv.URL+path)
		st["retry"] = engRetry
		if expect != nil {
			st["expect"] = expect
		}
		wf, _ := deployWorkflow(t, f, slug, engDef(nil, "", st))
		return wf, engStart(t, f.owner, f, wf, nil)
	}
	gaps := func(list []recorded) []time.Duration {
		var out []time.Duration
		for i := 1; i < len(list); i++ {
			out = append(out, list[i].At.Sub(list[i-1].At))
		}
		return out
	}
	var permanentRun, driftRun, wfPermanent string

	t.Run("cases", func(t *testing.T) {
		t.Run("transient 503 then success", func(t *testing.T) {
			t.Parallel()
			srv.script("/flaky503", reply{Status: 503, Body: "down"}, reply{Status: 503, Body: "down"}, reply{Status: 200, Body: map[string]any{"ok": "third"}})
			_, id := flaky(t, "flaky503", "/flaky503", nil)
			run := engFinish(t, f.owner, id, "succeeded")
			if got := get(stepOf(run, "call"), "output.body.ok"); got != "third" {
				t.Errorf("output: %v", stepOf(run, "call"))
			}
			atts := engAttempts(t, run, "call")
			if len(atts) != 3 || stepOf(run, "call")["attempts"] != float64(3) {
				t.Fatalf("attempts: %v", atts)
			}
			for i, a := range atts {
				want := "failed"
				if i == 2 {
					want = "succeeded"
				}
				if a["number"] != float64(i+1) || a["status"] != want {
					t.Errorf("attempt %d: %v", i+1, a)
				}
				if i < 2 && get(a, "error.class") != "transient" {
					t.Errorf("attempt %d error: %v", i+1, a["error"])
				}
			}
			if n := engCountEvents(run, "step.retrying"); n != 2 {
				t.Errorf("step.retrying events: %d", n)
			}
			reqs := engCount(t, srv, "GET", "/flaky503", 3)
			// Backoff with initialInterval 1s, coefficient 2 and "equal
			// jitter" (internal/definition.Backoff): the first wait is at
			// least 0.5s, the second at least 1s.
			g := gaps(reqs)
			t.Logf("gaps between attempts: %v", g)
			if g[0] < 450*time.Millisecond || g[1] < 950*time.Millisecond {
				t.Errorf("retries came too soon: gaps %v (want >= 0.5s, >= 1s)", g)
			}
		})

		t.Run("429 Retry-After honoured", func(t *testing.T) {
			t.Parallel()
			srv.script("/flaky429", reply{Status: 429, Headers: map[string]string{"Retry-After": "2"}, Body: "slow down"}, reply{Status: 200, Body: map[string]any{"ok": true}})
			_, id := flaky(t, "flaky429", "/flaky429", nil)
			run := engFinish(t, f.owner, id, "succeeded")
			// The 429 cools the host down and defers the attempt: no retry
			// is spent (README, rate limits).
			atts := engAttempts(t, run, "call")
			if len(atts) != 1 || atts[0]["status"] != "succeeded" {
				t.Errorf("attempts: %v", atts)
			}
			reqs := engCount(t, srv, "GET", "/flaky429", 2)
			g := gaps(reqs)[0]
			t.Logf("gap after the 429: %v", g)
			if g < 1950*time.Millisecond {
				t.Errorf("second request %v after the 429 with Retry-After: 2", g)
			}
		})

		t.Run("400 is permanent", func(t *testing.T) {
			t.Parallel()
			srv.script("/flaky400", reply{Status: 400, Body: map[string]any{"error": "bad request"}})
			var id string
			wfPermanent, id = flaky(t, "flaky400", "/flaky400", nil)
			run := engFinish(t, f.owner, id, "failed")
			if get(run, "error.class") != "permanent" || get(run, "error.stepID") != "call" || run["failedStepID"] != "call" {
				t.Errorf("run error: %v", run["error"])
			}
			if atts := engAttempts(t, run, "call"); len(atts) != 1 || get(atts[0], "error.class") != "permanent" {
				t.Errorf("attempts: %v", atts)
			}
			if st := stepOf(run, "call"); st["status"] != "failed" || get(st, "error.class") != "permanent" {
				t.Errorf("step: %v", st)
			}
			if n := engCountEvents(run, "step.retrying"); n != 0 {
				t.Errorf("a permanent failure was retried: %v", eventTypes(run))
			}
			engCount(t, srv, "GET", "/flaky400", 1)
			permanentRun = id
		})

		t.Run("schema drift", func(t *testing.T) {
			t.Parallel()
			srv.script("/drift", reply{Status: 200, Body: map[string]any{"title": "renamed field"}})
			_, id := flaky(t, "drift", "/drift", map[string]any{"status": []any{200}, "schema": map[string]any{"type": "object", "required": []any{"subject"}}})
			run := engFinish(t, f.owner, id, "failed")
			if get(run, "error.class") != "schema_drift" {
				t.Errorf("run error: %v", run["error"])
			}
			if atts := engAttempts(t, run, "call"); len(atts) != 1 || get(atts[0], "error.class") != "schema_drift" {
				t.Errorf("attempts: %v", atts)
			}
			engCount(t, srv, "GET", "/drift", 1)
			driftRun = id
		})
	})
	if t.Failed() {
		return
	}

	t.Run("dead letter", func(t *testing.T) {
		groups, _ := get(f.owner.ok(qEngDeadLetter, nil), "deadLetter").([]any)
		byClass := map[string][]string{}
		counts := map[string]float64{}
		for _, g := range groups {
			class := str(g, "class")
			counts[class] = get(g, "count").(float64)
			for _, r := range get(g, "runs").([]any) {
				if str(r, "status") != "failed" || str(r, "error.class") != class {
					t.Errorf("group %s holds %v", class, r)
				}
				byClass[class] = append(byClass[class], str(r, "id"))
			}
		}
		want := map[string][]string{"permanent": {permanentRun}, "schema_drift": {driftRun}}
		if !reflect.DeepEqual(byClass, want) || counts["permanent"] != 1 || counts["schema_drift"] != 1 {
			t.Errorf("deadLetter = %v (counts %v), want %v", byClass, counts, want)
		}
		// Filtered by workflow, only that workflow's failure.
		groups, _ = get(f.owner.ok(qEngDeadLetter, map[string]any{"w": wfPermanent}), "deadLetter").([]any)
		if len(groups) != 1 || str(groups[0], "class") != "permanent" {
			t.Errorf("deadLetter(workflowID) = %v", groups)
		}
	})
}

// TestEngineStartRunIdempotency: concurrent starts with one key make one
// run; the key with another input is a conflict.
func TestEngineStartRunIdempotency(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-idem")
	wf, ver := deployWorkflow(t, f, "idem", simpleDefinition())
	key := "order-" + randHex(6)
	input := map[string]any{"name": "ada"}
	results := engConcurrently(t, 20, f.owner, func(int) (string, map[string]any) {
		return mStartRun, map[string]any{"w": wf, "e": f.envID, "i": input, "k": key}
	})
	ids := map[string]int{}
	for i, r := range results {
		if len(r.Errors) > 0 {
			t.Errorf("start %d: %s", i, r.Raw)
			continue
		}
		ids[str(r.Data, "startRun.id")]++
	}
	if len(ids) != 1 {
		t.Fatalf("20 starts with one key made runs %v", ids)
	}
	var runID string
	for id := range ids {
		runID = id
	}
	if n := get(f.owner.ok(qEngRunCount, map[string]any{"w": wf}), "runs.totalCount"); n != float64(1) {
		t.Fatalf("runs of the workflow: %v", n)
	}
	run := engFinish(t, f.owner, runID, "succeeded")
	if run["idempotencyKey"] != key || run["output"] != "HELLO ADA" {
		t.Errorf("run: %v", run)
	}
	// The same key and input later still answers the same run.
	if id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": input, "k": key}), "startRun.id"); id != runID {
		t.Errorf("repeat start: %s, want %s", id, runID)
	}
	f.owner.fail("CONFLICT", mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"name": "bob"}, "k": key})
	newClient(t, 1, f.owner.token).fail("CONFLICT", mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}, "k": key})
	if n := get(f.owner.ok(qEngRunCount, map[string]any{"w": wf}), "runs.totalCount"); n != float64(1) {
		t.Fatalf("runs after the conflicts: %v", n)
	}
	// The key names one request: the same input to another workflow or
	// environment is another request, not a way to fetch this run.
	r := f.owner.do(mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": input, "k": key})
	if r.Code() != "CONFLICT" {
		t.Errorf("same key and input on another workflow: %s", r.Raw)
	}
	f.owner.ok(mDeploy, map[string]any{"v": ver, "e": f.prodEnvID})
	r = f.owner.do(mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": input, "k": key})
	if r.Code() != "CONFLICT" {
		t.Errorf("same key and input in another environment: %s", r.Raw)
	}
}

// TestEngineConcurrentApprovalDecisions: of 20 concurrent decisions on one
// approval exactly one wins, and what follows the approval runs once.
func TestEngineConcurrentApprovalDecisions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-decide")
	srv := newScriptServer(t)
	operator := newClient(t, 0, token(t, f.tenantID, "operator"))

	race := func(t *testing.T, slug string, decision func(i int) string) {
		path := "/sink/" + slug
		sink := engHTTP("sink", "POST", srv.URL+path, "review")
		sink["sideEffect"] = true
		sink["request"].(map[string]any)["body"] = map[string]any{"decided": "{{ string(steps.review.output.approved) }}"}
		prep := map[string]any{"id": "prep", "type": "transform", "output": "input.name"}
		wf, _ := deployWorkflow(t, f, slug, engDef(nil, "", prep, engApproval("review", "1h", "reject", "prep"), sink))
		runID := engStart(t, operator, f, wf, map[string]any{"name": "x"})
		apr := engPendingApproval(t, operator, runID)

		results := engConcurrently(t, 20, operator, func(i int) (string, map[string]any) {
			return mEngDecide, map[string]any{"id": apr, "d": decision(i), "c": fmt.Sprintf("decider %d", i)}
		})
		var winners []map[string]any
		conflicts := 0
		for i, r := range results {
			switch {
			case len(r.Errors) == 0:
				w, _ := get(r.Data, "decideApproval").(map[string]any)
				w["decider"] = i
				winners = append(winners, w)
			case r.Code() == "CONFLICT":
				conflicts++
			default:
				t.Errorf("decider %d: %s", i, r.Raw)
			}
		}
		if len(winners) != 1 || conflicts != 19 {
			t.Fatalf("%d decisions won, %d conflicts (want 1 and 19): %v", len(winners), conflicts, winners)
		}
		w := winners[0]
		wantStatus := map[string]string{"APPROVE": "approved", "REJECT": "rejected"}[decision(w["decider"].(int))]
		if w["status"] != wantStatus {
			t.Fatalf("winner %v answered %v", w["decider"], w)
		}
		a := get(operator.ok(qEngApproval, map[string]any{"id": apr}), "node")
		if get(a, "status") != wantStatus || get(a, "comment") != fmt.Sprintf("decider %d", w["decider"]) {
			t.Errorf("stored approval %v does not match the winner %v", a, w)
		}

		var run map[string]any
		if wantStatus == "approved" {
			run = engFinish(t, operator, runID, "succeeded")
			if st := stepOf(run, "sink"); st["status"] != "succeeded" || st["attempts"] != float64(1) {
				t.Errorf("sink step: %v", st)
			}
		} else {
			run = engFinish(t, operator, runID, "failed")
			if run["failedStepID"] != "review" || stepOf(run, "review")["status"] != "failed" {
				t.Errorf("rejected run: %v", run)
			}
			engNeverRan(t, run, "sink")
		}
		if n := engCountEvents(run, "approval.decided"); n != 1 {
			t.Errorf("approval.decided events: %d (%v)", n, eventTypes(run))
		}
		if ev := engEvent(run, "approval.decided"); get(ev, "data.decision") != strings.ToLower(decision(w["decider"].(int))) {
			t.Errorf("approval.decided: %v", ev)
		}
		// A late duplicate execution would come from a step task of this
		// run: once the queue holds none, every one has been handled, and
		// the run's record and the sink show what they did.
		waitQueueHandled(t, suiteRedis(t), "steps", runID)
		run = engRun(t, operator, runID)
		want := 0
		if wantStatus == "approved" {
			want = 1
			if atts := engAttempts(t, run, "sink"); len(atts) != 1 || atts[0]["status"] != "succeeded" {
				t.Errorf("sink attempts: %v", atts)
			}
		} else {
			engNeverRan(t, run, "sink")
		}
		posts := engCount(t, srv, "POST", path, want)
		if want == 1 && engJSONBody(t, posts[0])["decided"] != "true" {
			t.Errorf("sink body: %s", posts[0].Body)
		}
	}

	t.Run("mixed", func(t *testing.T) {
		t.Parallel()
		race(t, "mixed", func(i int) string {
			if i%2 == 0 {
				return "APPROVE"
			}
			return "REJECT"
		})
	})
	t.Run("all approve", func(t *testing.T) {
		t.Parallel()
		race(t, "allapprove", func(int) string { return "APPROVE" })
	})
}

// TestEngineApprovalTimeout: an undecided approval takes its onTimeout path.
func TestEngineApprovalTimeout(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-expire")
	srv := newScriptServer(t)
	for _, tc := range []struct{ onTimeout, want string }{{"reject", "failed"}, {"approve", "succeeded"}} {
		t.Run(tc.onTimeout, func(t *testing.T) {
			t.Parallel()
			path := "/after/" + tc.onTimeout
			prep := map[string]any{"id": "prep", "type": "transform", "output": "1"}
			wf, _ := deployWorkflow(t, f, "expire-"+tc.onTimeout, engDef(nil, "", prep,
				engApproval("review", "2s", tc.onTimeout, "prep"), engHTTP("after", "POST", srv.URL+path, "review")))
			started := time.Now()
			runID := engStart(t, f.owner, f, wf, nil)
			apr := engPendingApproval(t, f.owner, runID)
			run := engFinish(t, f.owner, runID, tc.want)
			if time.Since(started) < 2*time.Second {
				t.Errorf("approval expired after %v, before its 2s timeout", time.Since(started))
			}
			if engCountEvents(run, "approval.expired") != 1 || engCountEvents(run, "approval.decided") != 0 {
				t.Errorf("events: %v", eventTypes(run))
			}
			if ev := engEvent(run, "approval.expired"); get(ev, "data.onTimeout") != tc.onTimeout {
				t.Errorf("approval.expired: %v", ev)
			}
			if a := get(f.owner.ok(qEngApproval, map[string]any{"id": apr}), "node"); get(a, "status") != "expired" {
				t.Errorf("approval: %v", a)
			}
			rv := stepOf(run, "review")
			if tc.onTimeout == "approve" {
				if get(rv, "output.approved") != true || get(rv, "output.timedOut") != true {
					t.Errorf("review output: %v", rv)
				}
				engCount(t, srv, "POST", path, 1)
			} else {
				if rv["status"] != "failed" || run["failedStepID"] != "review" || get(run, "error.message") != "approval timed out" {
					t.Errorf("run: %v", run)
				}
				engNeverRan(t, run, "after")
				engCount(t, srv, "POST", path, 0)
			}
		})
	}
}

// TestEngineResume: a run failed at step 4 resumes from there, reusing steps
// 1-3 and sending step 4's side effect with the same idempotency key.
func TestEngineResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-resume")
	srv := newScriptServer(t)
	srv.script("/r/four", reply{Status: 400, Body: map[string]any{"error": "invalid note"}})
	four := engHTTP("four", "POST", srv.URL+"/r/four", "three")
	four["sideEffect"] = true
	four["request"].(map[string]any)["body"] = map[string]any{"from": "{{ steps.three.output.body.path }}"}
	wf, _ := deployWorkflow(t, f, "resume", engDef(nil, "",
		engHTTP("one", "GET", srv.URL+"/r/one"),
		engHTTP("two", "GET", srv.URL+"/r/two", "one"),
		engHTTP("three", "GET", srv.URL+"/r/three", "two"),
		four,
		engHTTP("five", "GET", srv.URL+"/r/five", "four")))
	runID := engStart(t, f.owner, f, wf, nil)
	run := engFinish(t, f.owner, runID, "failed")
	if run["failedStepID"] != "four" || get(run, "error.stepID") != "four" || get(run, "error.class") != "permanent" {
		t.Fatalf("failed run: %v", run["error"])
	}
	engNeverRan(t, run, "five")
	// Resuming a run that did not fail is refused.
	okRun := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "x"})
	engFinish(t, f.owner, okRun, "succeeded")
	f.owner.fail("CONFLICT", mEngResume, map[string]any{"id": okRun})

	srv.script("/r/four", reply{Status: 200, Body: map[string]any{"noted": true}})
	res := newClient(t, 1, f.owner.token).ok(mEngResume, map[string]any{"id": runID})
	if str(res, "resumeRun.id") != runID {
		t.Fatalf("resumeRun: %v", res)
	}
	run = engFinish(t, f.owner, runID, "succeeded")
	if run["error"] != nil || run["failedStepID"] != nil {
		t.Errorf("resumed run still shows its failure: %v", run["error"])
	}
	for _, p := range []string{"/r/one", "/r/two", "/r/three", "/r/five"} {
		engCount(t, srv, "GET", p, 1)
	}
	for _, id := range []string{"one", "two", "three"} {
		if st := stepOf(run, id); st["attempts"] != float64(1) {
			t.Errorf("step %s ran again: %v", id, st)
		}
	}
	posts := engCount(t, srv, "POST", "/r/four", 2)
	if posts[0].IdempotencyKey == "" || posts[0].IdempotencyKey != posts[1].IdempotencyKey {
		t.Errorf("Idempotency-Key changed across resume: %q then %q", posts[0].IdempotencyKey, posts[1].IdempotencyKey)
	}
	if engJSONBody(t, posts[1])["from"] != "/r/three" {
		t.Errorf("resumed body: %s", posts[1].Body)
	}
	if atts := engAttempts(t, run, "four"); len(atts) != 2 || atts[0]["status"] != "failed" || atts[1]["status"] != "succeeded" {
		t.Errorf("step four attempts: %v", atts)
	}
	if engCountEvents(run, "run.resumed") != 1 {
		t.Errorf("events: %v", eventTypes(run))
	}
}

// TestEngineReplay: a sandbox replay returns the recorded side effect and
// calls nothing; a live replay calls again under a new idempotency key.
func TestEngineReplay(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-replay")
	srv := newScriptServer(t)
	srv.script("/p/sink", reply{Status: 200, Body: map[string]any{"receipt": "r-1"}}, reply{Status: 200, Body: map[string]any{"receipt": "r-2"}})
	post := engHTTP("post", "POST", srv.URL+"/p/sink", "fetch")
	post["sideEffect"] = true
	post["request"].(map[string]any)["body"] = map[string]any{"who": "{{ input.name }}", "src": "{{ steps.fetch.output.body.path }}"}
	wf, _ := deployWorkflow(t, f, "replay", engDef(nil, "", engHTTP("fetch", "GET", srv.URL+"/p/src"), post))
	srcID := engStart(t, f.owner, f, wf, map[string]any{"name": "ada"})
	src := engFinish(t, f.owner, srcID, "succeeded")
	first := engCount(t, srv, "POST", "/p/sink", 1)[0]
	srcOut := stepOf(src, "post")["output"]
	if get(srcOut, "body.receipt") != "r-1" {
		t.Fatalf("source post output: %v", srcOut)
	}

	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	d := operator.ok(mEngReplay, map[string]any{"id": srcID, "m": "SANDBOX"})
	sbID := str(d, "replayRun.id")
	if sbID == "" || sbID == srcID || str(d, "replayRun.mode") != "sandbox" || str(d, "replayRun.replayOf") != srcID {
		t.Fatalf("replayRun: %v", d)
	}
	sb := engFinish(t, f.owner, sbID, "succeeded")
	// A stray call would be made by a step task of the replay: once the
	// queue holds none, every one has been handled.
	waitQueueHandled(t, suiteRedis(t), "steps", sbID)
	engCount(t, srv, "POST", "/p/sink", 1)
	if got := stepOf(sb, "post")["output"]; !reflect.DeepEqual(got, srcOut) {
		t.Errorf("sandbox post output %v, want the source's %v", got, srcOut)
	}

	d = operator.ok(mEngReplay, map[string]any{"id": srcID, "m": "LIVE"})
	liveID := str(d, "replayRun.id")
	if liveID == "" || liveID == srcID || liveID == sbID || str(d, "replayRun.mode") != "live" {
		t.Fatalf("live replayRun: %v", d)
	}
	live := engFinish(t, f.owner, liveID, "succeeded")
	posts := engCount(t, srv, "POST", "/p/sink", 2)
	if posts[1].IdempotencyKey == "" || posts[1].IdempotencyKey == first.IdempotencyKey {
		t.Errorf("live replay Idempotency-Key %q, source's %q", posts[1].IdempotencyKey, first.IdempotencyKey)
	}
	if !reflect.DeepEqual(engJSONBody(t, posts[1]), engJSONBody(t, first)) {
		t.Errorf("live replay body %s, source %s", posts[1].Body, first.Body)
	}
	if get(stepOf(live, "post"), "output.body.receipt") != "r-2" {
		t.Errorf("live replay post output: %v", stepOf(live, "post")["output"])
	}
}

// TestEngineCancelDuringDelay: cancelling a run parked on a delay stops it
// for good; the step after the delay never runs.
func TestEngineCancelDuringDelay(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-cancel")
	srv := newScriptServer(t)
	wait := map[string]any{"id": "wait", "type": "delay", "duration": "5s", "needs": []any{"prep"}}
	wf, _ := deployWorkflow(t, f, "cancel", engDef(nil, "",
		map[string]any{"id": "prep", "type": "transform", "output": "1"}, wait, engHTTP("after", "GET", srv.URL+"/c/after", "wait")))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	runID := engStart(t, operator, f, wf, nil)
	waitRun(t, operator, runID, engWait, "waiting")
	// The delay's end is a wake-up task scheduled on the queue; it is there
	// before the run is cancelled, so the test sees it handled afterwards.
	rdb := suiteRedis(t)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	wake := tasks.KindStep + ":" + engAttempts(t, engRun(t, operator, runID), "wait")[0]["id"].(string)
	eventually(t, engWait, func() (bool, string) {
		info, err := insp.GetTaskInfo("steps", wake)
		return err == nil && info.State == asynq.TaskStateScheduled, fmt.Sprintf("delay wake-up %s: %v %v", wake, info, err)
	})
	d := operator.ok(mEngCancel, map[string]any{"id": runID})
	if str(d, "cancelRun.status") != "cancelled" {
		t.Fatalf("cancelRun: %v", d)
	}
	operator.fail("CONFLICT", mEngCancel, map[string]any{"id": runID})
	// Once the delay's wake-up (and any task it led to) has been handled,
	// whatever it did is recorded.
	waitQueueHandled(t, rdb, "steps", runID)
	run := engRun(t, f.owner, runID)
	if run["status"] != "cancelled" || get(run, "error.class") != "cancelled" {
		t.Errorf("run: %v %v", run["status"], run["error"])
	}
	engCount(t, srv, "GET", "/c/after", 0)
	if st := stepOf(run, "after")["status"]; st != "cancelled" {
		t.Errorf("step after: %v", st)
	}
	if st := stepOf(run, "wait")["status"]; st != "cancelled" {
		t.Errorf("delay step: %v", st)
	}
	types := eventTypes(run)
	if types[len(types)-1] != "run.cancelled" || engCountEvents(run, "step.started") != 1 {
		t.Errorf("events: %v", types)
	}
}

// TestEngineVersionPinning: a run keeps the version it started on even when
// another is deployed while it waits.
func TestEngineVersionPinning(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-pin")
	def := func(tag string, approval bool) map[string]any {
		steps := []map[string]any{{"id": "greet", "type": "transform", "output": "'" + tag + ":' + input.name"}}
		needs := "greet"
		if approval {
			steps = append(steps, engApproval("review", "1h", "reject", "greet"))
			needs = "review"
		}
		steps = append(steps, map[string]any{"id": "final", "type": "transform", "needs": []any{needs}, "output": "steps.greet.output + '!'"})
		return engDef(nil, "steps.final.output", steps...)
	}
	wf, _ := deployWorkflow(t, f, "pin", def("v1", true))
	operator := newClient(t, 0, token(t, f.tenantID, "operator"))
	old := engStart(t, operator, f, wf, map[string]any{"name": "ada"})
	apr := engPendingApproval(t, operator, old)
	waitRun(t, operator, old, engWait, "waiting")

	v2 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": def("v2", false)}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v2})
	f.owner.ok(mDeploy, map[string]any{"v": v2, "e": f.envID})

	operator.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE"})
	run := engFinish(t, operator, old, "succeeded")
	if run["output"] != "v1:ada!" || get(run, "version.number") != float64(1) {
		t.Errorf("pinned run: output %v, version %v", run["output"], run["version"])
	}
	fresh := engFinish(t, operator, engStart(t, operator, f, wf, map[string]any{"name": "bob"}), "succeeded")
	if fresh["output"] != "v2:bob!" || get(fresh, "version.number") != float64(2) || stepOf(fresh, "review") != nil {
		t.Errorf("new run: output %v, version %v", fresh["output"], fresh["version"])
	}
}

// TestEngineStartRunBadInput: input breaking the version's schema and an
// environment with nothing deployed are VALIDATION errors that write nothing.
func TestEngineStartRunBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-bad")
	input := map[string]any{"type": "object", "required": []any{"ticketId"}, "properties": map[string]any{"ticketId": map[string]any{"type": "string"}}}
	wf, _ := deployWorkflow(t, f, "strict", engDef(input, "", map[string]any{"id": "echo", "type": "transform", "output": "input.ticketId"}))
	const qState = `{ runs { totalCount } approvals { totalCount } auditLogs { totalCount } }`
	before := f.owner.ok(qState, nil)

	for _, in := range []map[string]any{{"ticketId": 42}, {}, {"ticketId": []any{"x"}}} {
		r := f.owner.fail("VALIDATION", mStartRun, map[string]any{"w": wf, "e": f.envID, "i": in})
		p, _ := r.Errors[0].Extensions["path"].(string)
		if !strings.HasPrefix(p, "input.input") {
			t.Errorf("input %v: path %q: %s", in, p, r.Raw)
		}
	}
	r := f.owner.fail("VALIDATION", mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"ticketId": 7}})
	if !hasProblemAt(r, "input.input.ticketId") {
		t.Errorf("no problem at input.input.ticketId: %s", r.Raw)
	}
	// Nothing of this workflow is deployed in production.
	r = f.owner.fail("VALIDATION", mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": map[string]any{"ticketId": "T-1"}})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "input.environmentID" {
		t.Errorf("undeployed environment: %s", r.Raw)
	}
	// With an idempotency key too: the failure does not claim the key.
	f.owner.fail("VALIDATION", mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}, "k": "bad-1"})
	if after := f.owner.ok(qState, nil); !reflect.DeepEqual(before, after) {
		t.Errorf("bad starts wrote something: before %v after %v", before, after)
	}
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"ticketId": "T-1"}, "k": "bad-1"}), "startRun.id")
	if run := engFinish(t, f.owner, id, "succeeded"); !reflect.DeepEqual(run["output"], map[string]any{"echo": "T-1"}) {
		t.Errorf("good start after bad ones: %v", run["output"])
	}
}
