package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	mSkipStep      = `mutation($r: ID!, $s: String!, $o: Any!, $why: String!) { skipStep(runID: $r, stepID: $s, output: $o, reason: $why) { id status } }`
	mRetryStep     = `mutation($r: ID!, $s: String!, $why: String!) { retryStep(runID: $r, stepID: $s, reason: $why) { id status } }`
	qOverrideTrace = `query($id: ID!) { node(id: $id) { ... on Run { steps { stepID status attempts
		attemptList { number status calls { kind override by reason } } calls { kind override by reason } } } } }`
	qRunAudit = `{ auditLogs(first: 1000) { edges { node { action actor targetID metadata } } } }`
)

// overrideDef: fetch (an http step whose body must have a string subject)
// feeds shape, which reads steps.fetch.output.body.subject.
func overrideDef(url string) map[string]any {
	fetch := engHTTP("fetch", "GET", url)
	fetch["expect"] = map[string]any{"status": []any{200}, "schema": map[string]any{"type": "object", "required": []any{"subject"},
		"properties": map[string]any{"subject": map[string]any{"type": "string"}}}}
	shape := map[string]any{"id": "shape", "type": "transform", "needs": []any{"fetch"},
		"output": map[string]any{"label": "steps.fetch.output.body.subject"}}
	return engDef(nil, "steps.shape.output", fetch, shape)
}

// auditOf lists the override audit entries of target as "action actor
// reason".
func auditOf(t *testing.T, c *client, target string) []string {
	t.Helper()
	var out []string
	for _, e := range edges(c.ok(qRunAudit, nil), "auditLogs") {
		if str(e, "targetID") == target && strings.HasSuffix(str(e, "action"), "_step") {
			out = append(out, fmt.Sprintf("%s %s %v", str(e, "action"), str(e, "actor"), get(e, "metadata.reason")))
		}
	}
	return out
}

// eventOf returns the first event of typ in a run read with qEngRun.
func eventOf(run map[string]any, typ string) map[string]any {
	list, _ := run["events"].([]any)
	for _, e := range list {
		if m, _ := e.(map[string]any); str(m, "type") == typ {
			return m
		}
	}
	return nil
}

// TestOperatorSkipStep: a failed http step skipped with an output lets the
// run finish with downstream steps reading it; a bad output is VALIDATION at
// output.<field> with nothing written; viewers and another tenant cannot;
// the skip is in the events, the trace and the audit log.
func TestOperatorSkipStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "ovr-skip")
	srv := newScriptServer(t)
	srv.script("/o/fetch", reply{Status: 400, Body: map[string]any{"error": "partner down"}})
	wf, _ := deployWorkflow(t, f, "skip", overrideDef(srv.URL+"/o/fetch"))
	runID := engStart(t, f.owner, f, wf, nil)
	failed := engFinish(t, f.owner, runID, "failed")
	if failed["failedStepID"] != "fetch" {
		t.Fatalf("run failed at %v", failed["failedStepID"])
	}
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	events := len(failed["events"].([]any))
	good := map[string]any{"status": 200, "headers": map[string]any{}, "body": map[string]any{"subject": "typed by an operator"}}
	vars := func(out any, why string) map[string]any {
		return map[string]any{"r": runID, "s": "fetch", "o": out, "why": why}
	}

	// Outputs that do not fit: VALIDATION at the field, nothing written.
	for _, tc := range []struct {
		out  any
		path string
	}{
		{map[string]any{"status": "200", "body": map[string]any{"subject": "x"}}, "output.status"},
		{map[string]any{"status": 200, "body": map[string]any{"subject": 7}}, "output.body.subject"},
		{map[string]any{"status": 200, "body": map[string]any{}}, "output.body.subject"},
		{"just text", "output"},
	} {
		r := operator.fail("VALIDATION", mSkipStep, vars(tc.out, "outage"))
		if p := r.Errors[0].Extensions["path"]; p != tc.path {
			t.Errorf("output %v: path %v, want %s (%s)", tc.out, p, tc.path, r.Raw)
		}
	}
	operator.fail("VALIDATION", mSkipStep, vars(good, ""))
	operator.fail("VALIDATION", mSkipStep, map[string]any{"r": runID, "s": "nope", "o": good, "why": "x"})
	operator.fail("CONFLICT", mSkipStep, map[string]any{"r": runID, "s": "shape", "o": map[string]any{"label": "x"}, "why": "x"})
	newClient(t, 0, token(t, f.tenantID, "viewer")).fail("FORBIDDEN", mSkipStep, vars(good, "outage"))
	other := newFixture(t, "ovr-skip-b")
	otherOp := newClient(t, 0, token(t, other.tenantID, "operator"))
	otherOp.fail("NOT_FOUND", mSkipStep, vars(good, "outage"))
	otherOp.fail("NOT_FOUND", mRetryStep, map[string]any{"r": runID, "s": "fetch", "why": "outage"})
	after := engRun(t, f.owner, runID)
	if after["status"] != "failed" || len(after["events"].([]any)) != events || stepOf(after, "fetch")["status"] != "failed" {
		t.Fatalf("refused overrides changed the run: %v", after)
	}
	if a := auditOf(t, f.owner, runID); len(a) != 0 {
		t.Fatalf("refused overrides audited: %v", a)
	}

	res := operator.ok(mSkipStep, vars(good, "partner outage INC-42"))
	if s := str(res, "skipStep.status"); s != "running" && s != "succeeded" {
		t.Errorf("skipStep returned status %s", s)
	}
	run := engFinish(t, f.owner, runID, "succeeded")
	if got := fmt.Sprint(run["output"]); got != "map[label:typed by an operator]" {
		t.Errorf("run output: %s", got)
	}
	if out := fmt.Sprint(stepOf(run, "fetch")["output"]); !strings.Contains(out, "subject:typed by an operator") {
		t.Errorf("fetch output: %s", out)
	}
	ev := eventOf(run, "step.skipped_by_operator")
	if ev == nil || str(ev, "stepID") != "fetch" || get(ev, "data.by") != "user-operator@e2e.test" || get(ev, "data.reason") != "partner outage INC-42" {
		t.Errorf("step.skipped_by_operator: %v in %v", ev, eventTypes(run))
	}
	if ev := eventOf(run, "run.resumed"); ev == nil || get(ev, "data.override") != "skip" {
		t.Errorf("run.resumed: %v", ev)
	}
	// One call to the partner: the skip sent nothing.
	if n := len(srv.calls("/o/fetch")); n != 1 {
		t.Errorf("partner called %d times", n)
	}
	// The trace: the override is the step's last attempt, naming who and why.
	trace := get(f.owner.ok(qOverrideTrace, map[string]any{"id": runID}), "node")
	fetch := stepOf(trace.(map[string]any), "fetch")
	attempts := fetch["attemptList"].([]any)
	last := attempts[len(attempts)-1]
	if get(last, "status") != "succeeded" || fmt.Sprint(get(last, "calls")) != "[map[by:user-operator@e2e.test kind:override override:skip reason:partner outage INC-42]]" {
		t.Errorf("override attempt: %v", last)
	}
	if a := auditOf(t, f.owner, runID); !slices.Equal(a, []string{"run.skip_step user-operator@e2e.test partner outage INC-42"}) {
		t.Errorf("audit: %v", a)
	}
	// A finished run's steps cannot be overridden.
	operator.fail("CONFLICT", mSkipStep, vars(good, "again"))
	operator.fail("CONFLICT", mRetryStep, map[string]any{"r": runID, "s": "fetch", "why": "again"})
}

// TestOperatorRetryStep: retryStep on a failed step after its upstream
// recovered runs a new attempt and the run succeeds; audited and in the
// events and trace. A step that did not fail is CONFLICT.
func TestOperatorRetryStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "ovr-retry")
	srv := newScriptServer(t)
	srv.script("/o/fetch", reply{Status: 400, Body: map[string]any{"error": "partner down"}})
	wf, _ := deployWorkflow(t, f, "retry", overrideDef(srv.URL+"/o/fetch"))
	runID := engStart(t, f.owner, f, wf, nil)
	engFinish(t, f.owner, runID, "failed")
	admin := newClient(t, 1, token(t, f.tenantID, "admin"))
	admin.fail("VALIDATION", mRetryStep, map[string]any{"r": runID, "s": "fetch", "why": ""})
	admin.fail("CONFLICT", mRetryStep, map[string]any{"r": runID, "s": "shape", "why": "x"})

	srv.script("/o/fetch", reply{Status: 200, Body: map[string]any{"subject": "recovered"}})
	admin.ok(mRetryStep, map[string]any{"r": runID, "s": "fetch", "why": "partner back"})
	run := engFinish(t, f.owner, runID, "succeeded")
	if got := fmt.Sprint(run["output"]); got != "map[label:recovered]" {
		t.Errorf("run output: %s", got)
	}
	fetch := stepOf(run, "fetch")
	if fetch["attempts"] != float64(2) {
		t.Errorf("fetch attempts: %v", fetch["attempts"])
	}
	if n := len(srv.calls("/o/fetch")); n != 2 {
		t.Errorf("partner called %d times, want 2", n)
	}
	ev := eventOf(run, "step.retried_by_operator")
	if ev == nil || ev["attempt"] != float64(2) || get(ev, "data.by") != "user-admin@e2e.test" || get(ev, "data.reason") != "partner back" || str(ev, "data.attemptID") == "" {
		t.Errorf("step.retried_by_operator: %v in %v", ev, eventTypes(run))
	}
	trace := get(f.owner.ok(qOverrideTrace, map[string]any{"id": runID}), "node")
	calls := fmt.Sprint(get(stepOf(trace.(map[string]any), "fetch"), "calls"))
	if !strings.Contains(calls, "map[by:user-admin@e2e.test kind:override override:retry reason:partner back]") {
		t.Errorf("trace calls: %s", calls)
	}
	if a := auditOf(t, f.owner, runID); !slices.Equal(a, []string{"run.retry_step user-admin@e2e.test partner back"}) {
		t.Errorf("audit: %v", a)
	}
}

// TestOperatorSkipWaitingApproval: a waiting approval step skipped with an
// approval-shaped output closes its approval and the run goes on.
func TestOperatorSkipWaitingApproval(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "ovr-wait")
	shape := map[string]any{"id": "shape", "type": "transform", "needs": []any{"review"}, "output": map[string]any{"ok": "steps.review.output.approved"}}
	wf, _ := deployWorkflow(t, f, "wait", engDef(nil, "steps.shape.output", engApproval("review", "1h", ""), shape))
	runID := engStart(t, f.owner, f, wf, nil)
	approvalID := engPendingApproval(t, f.owner, runID)
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	vars := func(out any) map[string]any {
		return map[string]any{"r": runID, "s": "review", "o": out, "why": "approved by phone"}
	}
	r := operator.fail("VALIDATION", mSkipStep, vars(map[string]any{"approved": "yes"}))
	if p := r.Errors[0].Extensions["path"]; p != "output.approved" {
		t.Errorf("path %v", p)
	}
	operator.ok(mSkipStep, vars(map[string]any{"approved": true, "decision": "approve", "decidedBy": "phone"}))
	run := engFinish(t, f.owner, runID, "succeeded")
	if got := fmt.Sprint(run["output"]); got != "map[ok:true]" {
		t.Errorf("run output: %s", got)
	}
	if s := str(get(f.owner.ok(qEngApproval, map[string]any{"id": approvalID}), "node"), "status"); s != "cancelled" {
		t.Errorf("approval after skip: %s", s)
	}
	if eventOf(run, "step.skipped_by_operator") == nil {
		t.Errorf("events: %v", eventTypes(run))
	}
	// A cancelled run's steps cannot be overridden.
	cancelled := engStart(t, f.owner, f, wf, nil)
	engPendingApproval(t, f.owner, cancelled)
	f.owner.ok(mEngCancel, map[string]any{"id": cancelled})
	operator.fail("CONFLICT", mSkipStep, map[string]any{"r": cancelled, "s": "review", "o": map[string]any{"approved": true}, "why": "late"})
}

// TestOperatorSkipWaitingEvent: a wait step skipped while it waits for an
// outside event closes its wait: the event arriving later resumes nothing.
func TestOperatorSkipWaitingEvent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "ovr-event")
	wf, _ := deployWorkflow(t, f, "event", waitDefinition("1h", ""))
	order := "o-" + randHex(4)
	runID, _ := waitingRun(t, f.owner, f, wf, order)
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	operator.ok(mSkipStep, map[string]any{"r": runID, "s": "paid", "o": map[string]any{"amount": 12}, "why": "paid by wire"})
	run := engFinish(t, f.owner, runID, "succeeded")
	if got := fmt.Sprint(run["output"]); got != "map[amount:12]" {
		t.Errorf("run output: %s", got)
	}
	if got := sendEvent(f.owner, f.envID, "payment.settled", map[string]any{"order": order}, ""); fmt.Sprint(got["resumed"]) != "0" {
		t.Errorf("event after the skip resumed %v", got["resumed"])
	}
}

// TestOperatorSkipLastStep: skipping the step that completes the run leaves
// the run's output expression to a worker; the run succeeds with it.
func TestOperatorSkipLastStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "ovr-last")
	srv := newScriptServer(t)
	srv.script("/o/last", reply{Status: 400, Body: map[string]any{"error": "partner down"}})
	def := overrideDef(srv.URL + "/o/last")
	def["steps"] = def["steps"].([]any)[:1]
	def["output"] = "{'subject': steps.fetch.output.body.subject, 'status': steps.fetch.output.status}"
	wf, _ := deployWorkflow(t, f, "last", def)
	runID := engStart(t, f.owner, f, wf, nil)
	engFinish(t, f.owner, runID, "failed")
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	operator.ok(mSkipStep, map[string]any{"r": runID, "s": "fetch", "o": map[string]any{"status": 299, "body": map[string]any{"subject": "manual"}}, "why": "last"})
	run := engFinish(t, f.owner, runID, "succeeded")
	if got := fmt.Sprint(run["output"]); got != "map[status:299 subject:manual]" {
		t.Errorf("run output: %s", got)
	}
	fetch := stepOf(run, "fetch")
	if fetch["status"] != "succeeded" || fetch["attempts"] != float64(2) {
		t.Errorf("fetch: %v", fetch)
	}
	trace := get(f.owner.ok(qOverrideTrace, map[string]any{"id": runID}), "node")
	attempts := stepOf(trace.(map[string]any), "fetch")["attemptList"].([]any)
	if last := attempts[len(attempts)-1]; get(last, "status") != "succeeded" || !strings.Contains(fmt.Sprint(get(last, "calls")), "override:skip") {
		t.Errorf("override attempt: %v", last)
	}
	if eventOf(run, "step.skipped_by_operator") == nil || len(srv.calls("/o/last")) != 1 {
		t.Errorf("events %v, partner calls %d", eventTypes(run), len(srv.calls("/o/last")))
	}
}
