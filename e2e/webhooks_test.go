package e2e

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/sluicehq/sluice/internal/ids"
)

// The webhook tests register endpoints on a scriptServer, run workflows and
// check what arrives there as a receiver would: every message is verified
// with the Standard Webhooks reference library (not Sluice's signing code),
// and the deliveries are read back over GraphQL. baseEnv runs the retry
// schedule at 1/1000 speed and the rotation grace at 3s.

const (
	hookWait = 30 * time.Second

	mHookCreate = `mutation($u: String!, $t: [String!], $d: String) { createWebhookEndpoint(input: {url: $u, eventTypes: $t, description: $d}) {
		secret endpoint { id url description eventTypes enabled disabledReason createdBy previousSecretExpiresAt failingSince } } }`
	mHookUpdate = `mutation($in: UpdateWebhookEndpointInput!) { updateWebhookEndpoint(input: $in) {
		id url description eventTypes enabled disabledReason previousSecretExpiresAt failingSince } }`
	mHookRotate    = `mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret endpoint { id previousSecretExpiresAt } } }`
	mHookDelete    = `mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }`
	mHookRedeliver = `mutation($id: ID!) { redeliverWebhookDelivery(id: $id) { id webhookID status attempts } }`
	qHookEndpoints = `{ webhookEndpoints(first: 100) { totalCount edges { node {
		id url description eventTypes enabled disabledReason createdBy previousSecretExpiresAt failingSince } } } }`
	qHookEndpoint = `query($id: ID!) { node(id: $id) { id ... on WebhookEndpoint { url description eventTypes enabled disabledReason
		previousSecretExpiresAt failingSince createdBy deliveries(first: 100) { totalCount } } } }`
	hookDeliveryFields = `id createdAt webhookID eventType runID seq payload status attempts nextAttemptAt lastStatusCode lastError deliveredAt endpointID
		attemptList { id number statusCode error latencyMs nextAttemptAt createdAt }`
	qHookDeliveries = `query($w: WebhookDeliveryWhereInput) { webhookDeliveries(first: 200, where: $w) { totalCount edges { node { ` + hookDeliveryFields + ` } } } }`
	qHookDelivery   = `query($id: ID!) { node(id: $id) { id ... on WebhookDelivery { ` + hookDeliveryFields + ` } } }`
	qHookRunEvents  = `query($id: ID!) { node(id: $id) { ... on Run { id status workflowID versionID environmentID events(first: 1000) { id seq type stepID attempt data at } } } }`
	qHookAudit      = `query($a: String!) { auditLogs(first: 100, where: {action: $a}) { totalCount edges { node { action actor actorType targetType targetID metadata } } } }`
)

// hookRunCatalog is the documented catalog's events that runs raise
// without SLAs or escalation policies; hookCatalog is the whole catalog
// (approval.escalated and the tenant events have tests of their own).
var (
	hookRunCatalog = []string{
		"run.started", "run.succeeded", "run.failed", "run.cancelled",
		"step.failed",
		"approval.requested", "approval.decided", "approval.expired",
		"budget.exceeded",
	}
	hookCatalog = []string{
		"run.started", "run.succeeded", "run.failed", "run.cancelled",
		"step.failed",
		"approval.requested", "approval.decided", "approval.expired", "approval.escalated",
		"budget.exceeded",
		"sla.breached", "incident.acknowledged", "incident.escalated", "incident.resolved",
	}
)

// webhookTypes is every type webhooks deliver, in webhookEventTypes' order:
// hookCatalog's run events, approval escalations, and the tenant events of
// service levels and evaluation.completed (their own tests check them).
var webhookTypes = []string{
	"run.started", "run.succeeded", "run.failed", "run.cancelled",
	"step.failed", "step.response_changed",
	"approval.requested", "approval.decided", "approval.expired", "approval.escalated",
	"budget.exceeded",
	"sla.breached", "incident.acknowledged", "incident.escalated", "incident.resolved",
	"release.started", "release.progressed", "release.paused", "release.resumed", "release.promoted",
	"release.rolled_back", "release.aborted", "deployment.rolled_back",
	"evaluation.completed",
	"deployment.approval_requested", "deployment.approved", "deployment.rejected", "deployment.expired",
	"credential.reauthorization_required", "credential.expiring", "credential.restored",
	"workflow.paused", "workflow.resumed",
}

// hookMsg is one message a receiver got: the request and its decoded body.
type hookMsg struct {
	recorded
	ID        string // webhook-id
	Type      string
	Timestamp string
	Data      map[string]any
}

func (m hookMsg) runID() string { return str(m.Data, "runID") }
func (m hookMsg) seq() int64 {
	f, _ := m.Data["seq"].(float64)
	return int64(f)
}

// hookEndpoint creates an endpoint and returns its id and secret.
func hookEndpoint(t *testing.T, c *client, url string, types ...string) (string, string) {
	t.Helper()
	vars := map[string]any{"u": url}
	if len(types) > 0 {
		vars["t"] = types
	}
	d := c.ok(mHookCreate, vars)
	id, secret := str(d, "createWebhookEndpoint.endpoint.id"), str(d, "createWebhookEndpoint.secret")
	if !strings.HasPrefix(id, "whe_") || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("createWebhookEndpoint: %v", d)
	}
	if get(d, "createWebhookEndpoint.endpoint.enabled") != true || str(d, "createWebhookEndpoint.endpoint.url") != url {
		t.Fatalf("new endpoint: %v", d)
	}
	return id, secret
}

// hookMsgs returns the messages received on exactly path, in arrival order.
func hookMsgs(t *testing.T, s *scriptServer, path string) []hookMsg {
	t.Helper()
	var out []hookMsg
	for _, r := range s.calls(path) {
		if r.Path != path {
			continue
		}
		var body struct {
			Type      string         `json:"type"`
			Timestamp string         `json:"timestamp"`
			Data      map[string]any `json:"data"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("webhook body on %s is not JSON: %q", path, r.Body)
		}
		out = append(out, hookMsg{recorded: r, ID: r.Header.Get("webhook-id"), Type: body.Type, Timestamp: body.Timestamp, Data: body.Data})
	}
	return out
}

// hookWaitMsgs waits until path has received at least n messages that
// match (all when match is nil) and returns those.
func hookWaitMsgs(t *testing.T, s *scriptServer, path string, n int, match func(hookMsg) bool) []hookMsg {
	t.Helper()
	var got []hookMsg
	eventually(t, hookWait, func() (bool, string) {
		got = got[:0]
		for _, m := range hookMsgs(t, s, path) {
			if match == nil || match(m) {
				got = append(got, m)
			}
		}
		return len(got) >= n, fmt.Sprintf("%s received %d matching messages, want %d: %v", path, len(got), n, hookTypes(got))
	})
	return got
}

func forRun(runID string) func(hookMsg) bool {
	return func(m hookMsg) bool { return m.runID() == runID }
}

func hookTypes(ms []hookMsg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Type
	}
	return out
}

// hookVerify checks a message's signature with the reference library.
func hookVerify(m hookMsg, secret string) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	return wh.Verify(m.Body, m.Header)
}

func mustVerify(t *testing.T, m hookMsg, secret, what string) {
	t.Helper()
	if err := hookVerify(m, secret); err != nil {
		t.Fatalf("%s: %s %s does not verify: %v (headers %v)", what, m.Type, m.ID, err, m.Header)
	}
}

// hookDeliveries lists the caller's deliveries matching where.
func hookDeliveries(t *testing.T, c *client, where map[string]any) []map[string]any {
	t.Helper()
	return edges(c.ok(qHookDeliveries, map[string]any{"w": where}), "webhookDeliveries")
}

// hookWaitDelivery polls the delivery with webhookID until its status is
// one of want and returns it.
func hookWaitDelivery(t *testing.T, c *client, webhookID string, timeout time.Duration, want ...string) map[string]any {
	t.Helper()
	var last map[string]any
	eventually(t, timeout, func() (bool, string) {
		if list := hookDeliveries(t, c, map[string]any{"webhookID": webhookID}); len(list) == 1 {
			last = list[0]
			return slices.Contains(want, str(last, "status")), fmt.Sprintf("delivery %s not %v: %v", webhookID, want, last)
		}
		return false, fmt.Sprintf("no single delivery %s", webhookID)
	})
	return last
}

// hookAttemptCodes lists the status codes of a delivery's attempts (0 for none).
func hookAttemptCodes(d map[string]any) []int {
	var out []int
	list, _ := d["attemptList"].([]any)
	for _, a := range list {
		f, _ := get(a, "statusCode").(float64)
		out = append(out, int(f))
	}
	return out
}

// hookAwaitEndpoint polls an endpoint until cond holds.
func hookAwaitEndpoint(t *testing.T, c *client, id string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	var ep map[string]any
	eventually(t, hookWait, func() (bool, string) {
		ep, _ = get(c.ok(qHookEndpoint, map[string]any{"id": id}), "node").(map[string]any)
		return ep != nil && cond(ep), fmt.Sprintf("endpoint %s not in the expected state: %v", id, ep)
	})
	return ep
}

// hookRunEvents returns a run and its catalog events in seq order.
func hookRunEvents(t *testing.T, c *client, runID string) (map[string]any, []map[string]any) {
	t.Helper()
	run, _ := get(c.ok(qHookRunEvents, map[string]any{"id": runID}), "node").(map[string]any)
	if run == nil {
		t.Fatalf("run %s not found", runID)
	}
	var out []map[string]any
	list, _ := run["events"].([]any)
	for _, e := range list {
		ev := e.(map[string]any)
		if slices.Contains(hookCatalog, str(ev, "type")) {
			out = append(out, ev)
		}
	}
	return run, out
}

// hookCheckRun waits for every catalog event of a finished run to arrive at
// path and checks each message against the run's event log: signature,
// headers, payload, per-run seq, and the delivery record behind it.
func hookCheckRun(t *testing.T, c *client, s *scriptServer, path, secret, runID string) []hookMsg {
	t.Helper()
	run, events := hookRunEvents(t, c, runID)
	msgs := hookWaitMsgs(t, s, path, len(events), forRun(runID))
	// Deliveries are recorded with the run's events, so the run being
	// finished means all of them exist. A duplicate would come from one
	// still pending or one too many: once each message's delivery is
	// recorded delivered (it is never sent again) and the endpoint has one
	// delivery per event, none can come.
	endpointID := ""
	for _, m := range msgs {
		endpointID = str(hookWaitDelivery(t, c, m.ID, hookWait, "delivered"), "endpointID")
	}
	if n := len(hookDeliveries(t, c, map[string]any{"runID": runID, "endpointID": endpointID})); n != len(events) {
		t.Fatalf("run %s: %d deliveries to %s for %d catalog events", runID, n, path, len(events))
	}
	msgs = hookWaitMsgs(t, s, path, len(events), forRun(runID))
	if len(msgs) != len(events) {
		t.Fatalf("run %s: %d messages for %d catalog events: got %v", runID, len(msgs), len(events), hookTypes(msgs))
	}
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].seq() < msgs[j].seq() })
	seen := map[string]bool{}
	for i, m := range msgs {
		ev := events[i]
		mustVerify(t, m, secret, "run "+runID)
		if seen[m.ID] || !strings.HasPrefix(m.ID, "msg_") {
			t.Fatalf("webhook-id %q repeated or malformed", m.ID)
		}
		seen[m.ID] = true
		if m.Method != http.MethodPost || !strings.HasPrefix(m.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: method %s, content type %q", m.Type, m.Method, m.Header.Get("Content-Type"))
		}
		ts, err := strconv.ParseInt(m.Header.Get("webhook-timestamp"), 10, 64)
		if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Errorf("%s: webhook-timestamp %q", m.Type, m.Header.Get("webhook-timestamp"))
		}
		if !strings.HasPrefix(m.Header.Get("webhook-signature"), "v1,") {
			t.Errorf("%s: webhook-signature %q", m.Type, m.Header.Get("webhook-signature"))
		}
		// The payload is {type, timestamp, data} and nothing else.
		var top map[string]any
		_ = json.Unmarshal(m.Body, &top)
		if len(top) != 3 {
			t.Errorf("%s: payload keys %v, want type, timestamp, data", m.Type, top)
		}
		if m.Type != ev["type"] || m.seq() != int64(ev["seq"].(float64)) {
			t.Fatalf("run %s message %d is %s seq %d; event log has %s seq %v", runID, i, m.Type, m.seq(), ev["type"], ev["seq"])
		}
		if i > 0 && m.seq() <= msgs[i-1].seq() {
			t.Fatalf("seq does not increase: %d after %d", m.seq(), msgs[i-1].seq())
		}
		at, err1 := time.Parse(time.RFC3339Nano, str(ev, "at"))
		stamp, err2 := time.Parse(time.RFC3339Nano, m.Timestamp)
		if err1 != nil || err2 != nil || !at.Equal(stamp) {
			t.Errorf("%s: timestamp %q, event at %q", m.Type, m.Timestamp, str(ev, "at"))
		}
		want := map[string]any{
			"tenantID": nil, "runID": runID, "workflowID": run["workflowID"], "versionID": run["versionID"],
			"environmentID": run["environmentID"], "eventID": ev["id"], "seq": ev["seq"],
		}
		for k, v := range want {
			if k == "tenantID" {
				if !strings.HasPrefix(str(m.Data, k), "ten_") {
					t.Errorf("%s: data.tenantID %v", m.Type, m.Data[k])
				}
				continue
			}
			if m.Data[k] != v {
				t.Errorf("%s: data.%s = %v, want %v", m.Type, k, m.Data[k], v)
			}
		}
		if m.Data["stepID"] != ev["stepID"] || m.Data["attempt"] != ev["attempt"] {
			t.Errorf("%s: stepID/attempt %v/%v, event %v/%v", m.Type, m.Data["stepID"], m.Data["attempt"], ev["stepID"], ev["attempt"])
		}
		if d, _ := ev["data"].(map[string]any); len(d) > 0 {
			got, _ := json.Marshal(m.Data["details"])
			wantD, _ := json.Marshal(d)
			if string(got) != string(wantD) {
				t.Errorf("%s: details %s, event data %s", m.Type, got, wantD)
			}
		} else if _, ok := m.Data["details"]; ok {
			t.Errorf("%s: details %v for an event without data", m.Type, m.Data["details"])
		}
		validStatus := []string{"queued", "running", "waiting", "succeeded", "failed", "cancelled"}
		if !slices.Contains(validStatus, str(m.Data, "runStatus")) {
			t.Errorf("%s: runStatus %v", m.Type, m.Data["runStatus"])
		}
		if term, ok := strings.CutPrefix(m.Type, "run."); ok && term != "started" && str(m.Data, "runStatus") != term {
			t.Errorf("%s: runStatus %v", m.Type, m.Data["runStatus"])
		}
	}
	// Each message is a delivery whose webhookID is the webhook-id header,
	// delivered on its first attempt.
	for _, m := range msgs {
		d := hookWaitDelivery(t, c, m.ID, hookWait, "delivered")
		if str(d, "eventType") != m.Type || str(d, "runID") != runID || int64(d["seq"].(float64)) != m.seq() {
			t.Errorf("delivery %v does not match message %s seq %d", d, m.Type, m.seq())
		}
		if d["attempts"] != float64(1) || !slices.Equal(hookAttemptCodes(d), []int{200}) || d["lastStatusCode"] != float64(200) || d["deliveredAt"] == nil {
			t.Errorf("delivery %s: %v", m.ID, d)
		}
		var stored any
		_ = json.Unmarshal(m.Body, &stored)
		if !jsonEqual(d["payload"], stored) {
			t.Errorf("delivery %s payload %v, sent %s", m.ID, d["payload"], m.Body)
		}
	}
	return msgs
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// hookFind returns the first message of type typ.
func hookFind(t *testing.T, ms []hookMsg, typ string) hookMsg {
	t.Helper()
	for _, m := range ms {
		if m.Type == typ {
			return m
		}
	}
	t.Fatalf("no %s among %v", typ, hookTypes(ms))
	return hookMsg{}
}

// TestWebhookRunEvents runs workflows that between them emit every catalog
// event and checks each arrives, signed, with the documented payload; an
// endpoint subscribed to run.succeeded only gets exactly those.
func TestWebhookRunEvents(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-events")
	srv := newScriptServer(t)
	catalog := f.owner.ok(`{ webhookEventTypes }`, nil)
	if got := fmt.Sprint(catalog["webhookEventTypes"]); got != fmt.Sprint(webhookTypes) {
		t.Fatalf("webhookEventTypes = %s, want %v", got, webhookTypes)
	}
	allID, allSecret := hookEndpoint(t, f.owner, srv.URL+"/hooks/all")
	succID, succSecret := hookEndpoint(t, f.owner, srv.URL+"/hooks/succeeded", "run.succeeded")
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	var runs []string
	var succeeded int

	t.Run("transform run", func(t *testing.T) {
		id := engStart(t, operator, f, f.workflowID, map[string]any{"name": "ada"})
		engFinish(t, f.owner, id, "succeeded")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		if got := hookTypes(msgs); !slices.Equal(got, []string{"run.started", "run.succeeded"}) {
			t.Fatalf("events %v", got)
		}
		if rs := str(msgs[0].Data, "runStatus"); rs != "running" && rs != "succeeded" {
			t.Errorf("run.started runStatus %q", rs)
		}
		// The succeeded-only endpoint's secret does not verify the other
		// endpoint's messages: the verifier is not vacuous.
		if hookVerify(msgs[0], succSecret) == nil {
			t.Fatal("a message verifies with another endpoint's secret")
		}
		runs = append(runs, id)
		succeeded++
	})

	t.Run("failing http step", func(t *testing.T) {
		srv.script("/api/broken", reply{Status: 400, Body: map[string]any{"error": "nope"}})
		wf, _ := deployWorkflow(t, f, "hook-broken", engDef(nil, "", engHTTP("call", "GET", srv.URL+"/api/broken")))
		id := engStart(t, operator, f, wf, nil)
		engFinish(t, f.owner, id, "failed")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		if got := hookTypes(msgs); !slices.Equal(got, []string{"run.started", "step.failed", "run.failed"}) {
			t.Fatalf("events %v", got)
		}
		sf := hookFind(t, msgs, "step.failed")
		if sf.Data["stepID"] != "call" || sf.Data["attempt"] != float64(1) || str(sf.Data, "details.class") != "permanent" || str(sf.Data, "details.message") == "" {
			t.Errorf("step.failed data: %v", sf.Data)
		}
		rf := hookFind(t, msgs, "run.failed")
		if str(rf.Data, "details.stepID") != "call" || str(rf.Data, "details.class") != "permanent" || str(rf.Data, "runStatus") != "failed" {
			t.Errorf("run.failed data: %v", rf.Data)
		}
		runs = append(runs, id)
	})

	t.Run("approval approved", func(t *testing.T) {
		wf, _ := deployWorkflow(t, f, "hook-approve", engDef(nil, "", engApproval("review", "1h", "reject"),
			map[string]any{"id": "after", "type": "transform", "needs": []any{"review"}, "output": "'ok'"}))
		id := engStart(t, operator, f, wf, nil)
		apr := engPendingApproval(t, operator, id)
		operator.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE", "c": "ship it"})
		engFinish(t, f.owner, id, "succeeded")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		for _, typ := range []string{"approval.requested", "approval.decided", "run.succeeded"} {
			hookFind(t, msgs, typ)
		}
		req := hookFind(t, msgs, "approval.requested")
		if req.Data["stepID"] != "review" || str(req.Data, "details.approvalID") != apr || str(req.Data, "details.expiresAt") == "" {
			t.Errorf("approval.requested data: %v", req.Data)
		}
		dec := hookFind(t, msgs, "approval.decided")
		if str(dec.Data, "details.approvalID") != apr || str(dec.Data, "details.decision") == "" || str(dec.Data, "details.comment") != "ship it" ||
			!strings.HasPrefix(str(dec.Data, "details.by"), "user-operator") {
			t.Errorf("approval.decided data: %v", dec.Data)
		}
		runs = append(runs, id)
		succeeded++
	})

	t.Run("approval expired", func(t *testing.T) {
		wf, _ := deployWorkflow(t, f, "hook-expire", engDef(nil, "", engApproval("review", "1s", "reject")))
		id := engStart(t, operator, f, wf, nil)
		engFinish(t, f.owner, id, "failed")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		exp := hookFind(t, msgs, "approval.expired")
		if str(exp.Data, "details.onTimeout") != "reject" || str(exp.Data, "details.approvalID") == "" {
			t.Errorf("approval.expired data: %v", exp.Data)
		}
		hookFind(t, msgs, "step.failed")
		hookFind(t, msgs, "run.failed")
		runs = append(runs, id)
	})

	t.Run("cancelled", func(t *testing.T) {
		wf, _ := deployWorkflow(t, f, "hook-cancel", engDef(nil, "", engApproval("review", "1h", "reject")))
		id := engStart(t, operator, f, wf, nil)
		engPendingApproval(t, operator, id)
		operator.ok(mEngCancel, map[string]any{"id": id})
		engFinish(t, f.owner, id, "cancelled")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		c := hookFind(t, msgs, "run.cancelled")
		if !strings.HasPrefix(str(c.Data, "details.by"), "user-operator") || str(c.Data, "runStatus") != "cancelled" {
			t.Errorf("run.cancelled data: %v", c.Data)
		}
		runs = append(runs, id)
	})

	t.Run("budget exceeded", func(t *testing.T) {
		ai := newFakeOpenAI(t, "ok")
		ai.PromptTokens, ai.OutputTokens = 1000, 1000
		engCredential(t, f, "openai", "openai", map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"})
		wf, _ := deployWorkflow(t, f, "hook-budget", llmDefinition(0.0015))
		id := engStart(t, operator, f, wf, map[string]any{"ticket": "T"})
		engFinish(t, f.owner, id, "failed")
		msgs := hookCheckRun(t, f.owner, srv, "/hooks/all", allSecret, id)
		b := hookFind(t, msgs, "budget.exceeded")
		if b.Data["stepID"] != "review" || str(b.Data, "details.scope") != "run" || b.Data["details"].(map[string]any)["limitMicroUSD"] != float64(1500) {
			t.Errorf("budget.exceeded data: %v", b.Data)
		}
		runs = append(runs, id)
	})

	if t.Failed() {
		return
	}
	// Between them the runs produced every catalog event.
	var all []string
	for _, m := range hookMsgs(t, srv, "/hooks/all") {
		if !slices.Contains(all, m.Type) {
			all = append(all, m.Type)
		}
	}
	for _, typ := range hookRunCatalog {
		if !slices.Contains(all, typ) {
			t.Errorf("no %s delivered (got %v)", typ, all)
		}
	}
	// The run.succeeded-only endpoint got exactly the run.succeeded events.
	// Every run is finished, so every delivery is recorded; once none to
	// this endpoint is pending, nothing more is sent to it.
	hookWaitMsgs(t, srv, "/hooks/succeeded", succeeded, nil)
	eventually(t, hookWait, func() (bool, string) {
		list := hookDeliveries(t, f.owner, map[string]any{"endpointID": succID})
		return !slices.ContainsFunc(list, func(d map[string]any) bool { return d["status"] == "pending" }), fmt.Sprintf("deliveries: %v", list)
	})
	succ := hookMsgs(t, srv, "/hooks/succeeded")
	if len(succ) != succeeded {
		t.Fatalf("run.succeeded-only endpoint got %v, want %d run.succeeded", hookTypes(succ), succeeded)
	}
	for _, m := range succ {
		if m.Type != "run.succeeded" {
			t.Fatalf("run.succeeded-only endpoint got %s", m.Type)
		}
		mustVerify(t, m, succSecret, "succeeded-only endpoint")
		if hookVerify(m, allSecret) == nil {
			t.Fatal("a message verifies with another endpoint's secret")
		}
	}
	if n := len(hookDeliveries(t, f.owner, map[string]any{"endpointID": succID})); n != succeeded {
		t.Errorf("succeeded-only endpoint has %d deliveries, want %d", n, succeeded)
	}
	if n := len(hookDeliveries(t, f.owner, map[string]any{"endpointID": allID, "eventType": "run.succeeded"})); n != succeeded {
		t.Errorf("the all-events endpoint has %d run.succeeded deliveries, want %d", n, succeeded)
	}
	// where: runID selects one run's deliveries.
	for _, id := range runs {
		_, events := hookRunEvents(t, f.owner, id)
		if n := len(hookDeliveries(t, f.owner, map[string]any{"runID": id, "endpointID": allID})); n != len(events) {
			t.Errorf("run %s: %d deliveries, %d catalog events", id, n, len(events))
		}
	}
}

// hookSucceededRun starts a transform run of the fixture's workflow on c
// and waits for its run.succeeded message at path (the first one: retries
// come later).
func hookSucceededRun(t *testing.T, c *client, f *fixture, s *scriptServer, path string) (string, hookMsg) {
	t.Helper()
	id := engStart(t, c, f, f.workflowID, map[string]any{"name": "bob"})
	engFinish(t, c, id, "succeeded")
	msgs := hookWaitMsgs(t, s, path, 1, forRun(id))
	return id, msgs[0]
}

// TestWebhookRetries: failures are retried with the same webhook-id and
// every attempt is recorded; 410 disables the endpoint; redirects are not
// followed; Retry-After is honoured.
func TestWebhookRetries(t *testing.T) {
	t.Parallel()

	t.Run("500 500 200", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "hook-retry")
		srv := newScriptServer(t)
		srv.script("/h", reply{Status: 500, Body: "boom"}, reply{Status: 500, Body: "boom"}, reply{Status: 200, Body: "ok"})
		epID, secret := hookEndpoint(t, f.owner, srv.URL+"/h", "run.succeeded")
		runID, first := hookSucceededRun(t, f.owner, f, srv, "/h")
		msgs := hookWaitMsgs(t, srv, "/h", 3, forRun(runID))
		for _, m := range msgs {
			if m.ID != first.ID {
				t.Fatalf("webhook-id changed across retries: %s then %s", first.ID, m.ID)
			}
			mustVerify(t, m, secret, "retry")
		}
		d := hookWaitDelivery(t, f.owner, first.ID, hookWait, "delivered")
		if d["attempts"] != float64(3) || !slices.Equal(hookAttemptCodes(d), []int{500, 500, 200}) || d["lastStatusCode"] != float64(200) {
			t.Fatalf("delivery: %v", d)
		}
		list := d["attemptList"].([]any)
		for i, a := range list {
			if get(a, "number") != float64(i+1) {
				t.Errorf("attempt %d numbered %v", i+1, get(a, "number"))
			}
			if (i < 2) != (get(a, "nextAttemptAt") != nil) {
				t.Errorf("attempt %d nextAttemptAt %v", i+1, get(a, "nextAttemptAt"))
			}
		}
		// Delivered: it is never sent again, and the endpoint has no other
		// delivery.
		if n := len(hookMsgs(t, srv, "/h")); n != 3 {
			t.Fatalf("%d requests after delivery, want 3", n)
		}
		// A success ends the endpoint's failure streak.
		hookAwaitEndpoint(t, f.owner, epID, func(ep map[string]any) bool { return ep["failingSince"] == nil && ep["enabled"] == true })
	})

	t.Run("410 disables", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "hook-gone")
		srv := newScriptServer(t)
		srv.script("/gone", reply{Status: 410, Body: "gone"})
		epID, _ := hookEndpoint(t, f.owner, srv.URL+"/gone", "run.succeeded")
		_, first := hookSucceededRun(t, f.owner, f, srv, "/gone")
		d := hookWaitDelivery(t, f.owner, first.ID, hookWait, "exhausted", "delivered", "cancelled")
		if d["status"] != "exhausted" || d["attempts"] != float64(1) || !slices.Equal(hookAttemptCodes(d), []int{410}) {
			t.Fatalf("delivery after 410: %v", d)
		}
		ep := hookAwaitEndpoint(t, f.owner, epID, func(ep map[string]any) bool { return ep["enabled"] == false })
		if !strings.Contains(str(ep, "disabledReason"), "410") {
			t.Fatalf("disabledReason: %v", ep)
		}
		// Redelivering to a disabled endpoint is refused, not queued to be cancelled.
		if r := f.owner.fail("CONFLICT", mHookRedeliver, map[string]any{"id": d["id"]}); !strings.Contains(r.Errors[0].Message, "disabled") {
			t.Fatalf("redeliver to a disabled endpoint: %s", r.Raw)
		}
		audit := edges(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.disabled"}), "auditLogs")
		if len(audit) != 1 || audit[0]["targetID"] != epID || audit[0]["actorType"] != "system" || !strings.Contains(str(audit[0], "metadata.reason"), "410") {
			t.Fatalf("audit: %v", audit)
		}
		// A disabled endpoint gets nothing more.
		id := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "x"})
		engFinish(t, f.owner, id, "succeeded")
		// Deliveries are recorded with the run's events: the finished run
		// has all it will ever have, and nothing is sent without one.
		if n := len(hookDeliveries(t, f.owner, map[string]any{"runID": id})); n != 0 {
			t.Fatalf("%d deliveries recorded for a disabled endpoint", n)
		}
		if n := len(hookMsgs(t, srv, "/gone")); n != 1 {
			t.Fatalf("disabled endpoint received %d requests", n)
		}
		// Enabling it again clears the reason.
		up := f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "enabled": true}})
		if get(up, "updateWebhookEndpoint.enabled") != true || get(up, "updateWebhookEndpoint.disabledReason") != nil {
			t.Fatalf("re-enabled: %v", up)
		}
	})

	t.Run("302 not followed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "hook-302")
		srv := newScriptServer(t)
		srv.script("/moved", reply{Status: 302, Headers: map[string]string{"Location": srv.URL + "/target"}, Body: ""}, reply{Status: 200, Body: "ok"})
		_, secret := hookEndpoint(t, f.owner, srv.URL+"/moved", "run.succeeded")
		_, first := hookSucceededRun(t, f.owner, f, srv, "/moved")
		d := hookWaitDelivery(t, f.owner, first.ID, hookWait, "delivered", "exhausted")
		if d["status"] != "delivered" || !slices.Equal(hookAttemptCodes(d), []int{302, 200}) {
			t.Fatalf("delivery: %v", d)
		}
		for _, m := range hookMsgs(t, srv, "/moved") {
			mustVerify(t, m, secret, "after a redirect")
		}
		if n := len(srv.calls("/target")); n != 0 {
			t.Fatalf("the redirect target received %d requests", n)
		}
	})

	t.Run("Retry-After", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, "hook-ra")
		srv := newScriptServer(t)
		srv.script("/busy", reply{Status: 503, Headers: map[string]string{"Retry-After": "2"}, Body: "busy"}, reply{Status: 200, Body: "ok"})
		hookEndpoint(t, f.owner, srv.URL+"/busy", "run.succeeded")
		runID, first := hookSucceededRun(t, f.owner, f, srv, "/busy")
		msgs := hookWaitMsgs(t, srv, "/busy", 2, forRun(runID))
		if gap := msgs[1].At.Sub(msgs[0].At); gap < 2*time.Second {
			t.Fatalf("second attempt %s after a 503 with Retry-After: 2", gap)
		}
		d := hookWaitDelivery(t, f.owner, first.ID, hookWait, "delivered")
		if !slices.Equal(hookAttemptCodes(d), []int{503, 200}) {
			t.Fatalf("delivery: %v", d)
		}
	})
}

// TestWebhookExhaustedAndRedeliver runs an endpoint that always fails
// through the whole schedule on a stack whose schedule is scaled down
// further, then redelivers once it is fixed.
func TestWebhookExhaustedAndRedeliver(t *testing.T) {
	t.Parallel()
	// The ten attempts' delays add up to ~75.6h unscaled: ~8s here. The
	// 5-day disable-after period scales too (~13s), so the endpoint stays
	// enabled.
	st := newStack(t, 1, "SLUICE_WEBHOOK_SCHEDULE_SCALE=0.00003")
	f := newFixture(t, "hook-exhaust")
	owner := f.owner.on(st.server)
	srv := newScriptServer(t)
	srv.script("/down", reply{Status: 500, Body: "down"})
	epID, secret := hookEndpoint(t, owner, srv.URL+"/down", "run.succeeded")
	runID, first := hookSucceededRun(t, owner, f, srv, "/down")
	// While it is being retried it cannot be redelivered.
	owner.fail("CONFLICT", mHookRedeliver, map[string]any{"id": hookDeliveries(t, owner, map[string]any{"webhookID": first.ID})[0]["id"]})

	d := hookWaitDelivery(t, owner, first.ID, 90*time.Second, "exhausted")
	codes := hookAttemptCodes(d)
	if d["attempts"] != float64(10) || len(codes) != 10 || slices.ContainsFunc(codes, func(c int) bool { return c != 500 }) {
		t.Fatalf("exhausted delivery: %v", d)
	}
	if d["nextAttemptAt"] != nil || d["deliveredAt"] != nil || d["lastStatusCode"] != float64(500) {
		t.Fatalf("exhausted delivery: %v", d)
	}
	msgs := hookWaitMsgs(t, srv, "/down", 10, forRun(runID))
	for _, m := range msgs {
		if m.ID != first.ID {
			t.Fatalf("webhook-id changed: %s, %s", first.ID, m.ID)
		}
		mustVerify(t, m, secret, "retry")
	}
	// The attempts are spaced by the (scaled) schedule: later gaps grow.
	if gap := msgs[9].At.Sub(msgs[8].At); gap < 2*time.Second {
		t.Errorf("gap before the last attempt %s, want about 24h*0.00003 = 2.6s", gap)
	}
	listed := hookDeliveries(t, f.owner, map[string]any{"status": "exhausted", "endpointID": epID})
	if len(listed) != 1 || listed[0]["id"] != d["id"] {
		t.Fatalf("webhookDeliveries(where: {status: exhausted}): %v", listed)
	}
	if n := len(hookDeliveries(t, f.owner, map[string]any{"status": "pending"})); n != 0 {
		t.Fatalf("%d pending deliveries", n)
	}
	ep := hookAwaitEndpoint(t, f.owner, epID, func(map[string]any) bool { return true })
	if ep["enabled"] != true || ep["failingSince"] == nil {
		t.Fatalf("endpoint after one exhausted delivery: %v", ep)
	}

	// Still failing once 5 days (scaled: 13s) have passed since the
	// streak began: the next failure disables the endpoint. The streak's
	// start is moved 14s back in Postgres, where each attempt reads it,
	// instead of waiting for the time to pass.
	res, err := ownerDB(t).Exec(`UPDATE webhook_endpoints SET failing_since = failing_since - interval '14 seconds' WHERE id = $1 AND failing_since IS NOT NULL`, epID)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d endpoints back-dated, want 1", n)
	}
	runID2, second := hookSucceededRun(t, owner, f, srv, "/down")
	d2 := hookWaitDelivery(t, owner, second.ID, hookWait, "exhausted")
	if d2["attempts"] != float64(1) || str(d2, "runID") != runID2 {
		t.Fatalf("delivery that hit the disable-after period: %v", d2)
	}
	ep = hookAwaitEndpoint(t, f.owner, epID, func(ep map[string]any) bool { return ep["enabled"] == false })
	if !strings.Contains(str(ep, "disabledReason"), "5 days") {
		t.Fatalf("disabled endpoint: %v", ep)
	}
	audit := edges(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.disabled"}), "auditLogs")
	if len(audit) != 1 || audit[0]["targetID"] != epID || audit[0]["actorType"] != "system" {
		t.Fatalf("disable audit: %v", audit)
	}
	up := f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "enabled": true}})
	if get(up, "updateWebhookEndpoint.enabled") != true || get(up, "updateWebhookEndpoint.failingSince") != nil || get(up, "updateWebhookEndpoint.disabledReason") != nil {
		t.Fatalf("re-enabled: %v", up)
	}

	// Fixed: redelivery sends it again, same webhook-id, and it is delivered.
	srv.script("/down", reply{Status: 204})
	r := owner.ok(mHookRedeliver, map[string]any{"id": d["id"]})
	if str(r, "redeliverWebhookDelivery.status") != "pending" || str(r, "redeliverWebhookDelivery.webhookID") != first.ID {
		t.Fatalf("redeliver: %v", r)
	}
	msgs = hookWaitMsgs(t, srv, "/down", 11, forRun(runID))
	if msgs[10].ID != first.ID {
		t.Fatalf("redelivery webhook-id %s, want %s", msgs[10].ID, first.ID)
	}
	mustVerify(t, msgs[10], secret, "redelivery")
	d = hookWaitDelivery(t, owner, first.ID, hookWait, "delivered")
	if d["attempts"] != float64(11) || hookAttemptCodes(d)[10] != 204 || d["deliveredAt"] == nil {
		t.Fatalf("redelivered: %v", d)
	}
	if list := hookDeliveries(t, f.owner, map[string]any{"status": "exhausted"}); len(list) != 1 || list[0]["webhookID"] != second.ID {
		t.Fatalf("exhausted after the redelivery: %v", list)
	}
	audit = edges(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_delivery.redeliver"}), "auditLogs")
	if len(audit) != 1 || audit[0]["targetID"] != d["id"] || str(audit[0], "metadata.webhookID") != first.ID {
		t.Fatalf("redeliver audit: %v", audit)
	}
	// A delivered message can be sent again too (a receiver lost it).
	owner.ok(mHookRedeliver, map[string]any{"id": d["id"]})
	msgs = hookWaitMsgs(t, srv, "/down", 12, forRun(runID))
	if msgs[11].ID != first.ID {
		t.Fatalf("second redelivery webhook-id %s", msgs[11].ID)
	}
	hookWaitDelivery(t, owner, first.ID, hookWait, "delivered")
	// The viewer role may not redeliver.
	viewer := newClient(t, 0, token(t, f.tenantID, "viewer"))
	viewer.fail("FORBIDDEN", mHookRedeliver, map[string]any{"id": d["id"]})

	// Deleting the endpoint deletes its deliveries and their attempts.
	f.owner.ok(mHookDelete, map[string]any{"id": epID})
	if list := hookDeliveries(t, f.owner, nil); len(list) != 0 {
		t.Fatalf("deliveries after the endpoint was deleted: %v", list)
	}
	if n := get(f.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": d["id"]}), "node"); n != nil {
		t.Fatalf("deleted delivery still resolves: %v", n)
	}
	if n := get(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.delete"}), "auditLogs.totalCount"); n != float64(1) {
		t.Fatalf("%v delete audit entries", n)
	}
}

// TestWebhookDeliveryOutlivesWorkerCrash SIGKILLs the worker in the middle
// of an attempt and wipes its Redis: the attempt is never recorded and its
// wake-up is gone, yet the delivery is sent again (same webhook-id) once the
// attempt's lease ends, by whichever worker's reconciler finds it.
func TestWebhookDeliveryOutlivesWorkerCrash(t *testing.T) {
	t.Parallel()
	st := newProcessStack(t, 1) // its worker is SIGKILLed
	f := newFixture(t, "hook-crash")
	owner := f.owner.on(st.server)
	inFlight := make(chan struct{})
	var mu sync.Mutex
	var got []recorded
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, recorded{At: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
		first := len(got) == 1
		mu.Unlock()
		if first { // hang until the worker is killed
			close(inFlight)
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer recv.Close()
	_, secret := hookEndpoint(t, owner, recv.URL+"/slow", "run.succeeded")
	runID := engStart(t, owner, f, f.workflowID, map[string]any{"name": "crash"})
	select {
	case <-inFlight:
	case <-time.After(hookWait):
		t.Fatal("the delivery never arrived")
	}
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	rdb := st.redis()
	defer rdb.Close()
	if err := rdb.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	var msgs []recorded
	eventually(t, 60*time.Second, func() (bool, string) {
		mu.Lock()
		msgs = slices.Clone(got)
		mu.Unlock()
		return len(msgs) >= 2, "the delivery was never sent again after the worker died"
	})
	if msgs[1].Header.Get("webhook-id") != msgs[0].Header.Get("webhook-id") {
		t.Fatalf("webhook-id changed: %s, %s", msgs[0].Header.Get("webhook-id"), msgs[1].Header.Get("webhook-id"))
	}
	mustVerify(t, hookMsg{recorded: msgs[1]}, secret, "after the crash")
	d := hookWaitDelivery(t, f.owner, msgs[1].Header.Get("webhook-id"), hookWait, "delivered")
	if str(d, "runID") != runID || d["attempts"] != float64(2) || !slices.Equal(hookAttemptCodes(d), []int{204}) {
		t.Fatalf("delivery after the crash: %v", d)
	}
	t.Logf("sent again %s after the worker was killed", msgs[1].At.Sub(killed).Round(time.Millisecond))
}

// TestWebhookSecretRotation: after a rotation both secrets verify for the
// grace period (3s in the suite), then only the new one.
func TestWebhookSecretRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-rotate")
	srv := newScriptServer(t)
	epID, oldSecret := hookEndpoint(t, f.owner, srv.URL+"/rot", "run.succeeded")
	_, m := hookSucceededRun(t, f.owner, f, srv, "/rot")
	mustVerify(t, m, oldSecret, "before rotation")
	if n := len(strings.Fields(m.Header.Get("webhook-signature"))); n != 1 {
		t.Fatalf("%d signatures before any rotation", n)
	}

	rot := f.owner.ok(mHookRotate, map[string]any{"id": epID})
	newSecret := str(rot, "rotateWebhookSecret.secret")
	if !strings.HasPrefix(newSecret, "whsec_") || newSecret == oldSecret {
		t.Fatalf("rotate: %v", rot)
	}
	expires, err := time.Parse(time.RFC3339Nano, str(rot, "rotateWebhookSecret.endpoint.previousSecretExpiresAt"))
	if err != nil || time.Until(expires) > 4*time.Second || time.Until(expires) < time.Second {
		t.Fatalf("previousSecretExpiresAt %v (grace is 3s)", rot)
	}
	_, m = hookSucceededRun(t, f.owner, f, srv, "/rot")
	if !m.At.Before(expires) {
		t.Fatalf("the run took longer than the grace period (received %s, grace ended %s)", m.At, expires)
	}
	mustVerify(t, m, newSecret, "during grace, new secret")
	mustVerify(t, m, oldSecret, "during grace, old secret")

	// Waits for the grace period the server reported to pass (a deadline
	// on the server's own clock, plus margin), not for an outcome.
	time.Sleep(time.Until(expires) + 500*time.Millisecond)
	_, m = hookSucceededRun(t, f.owner, f, srv, "/rot")
	mustVerify(t, m, newSecret, "after grace, new secret")
	if hookVerify(m, oldSecret) == nil {
		t.Fatal("the old secret still verifies after the grace period")
	}
	if n := len(strings.Fields(m.Header.Get("webhook-signature"))); n != 1 {
		t.Fatalf("%d signatures after the grace period", n)
	}
	audit := edges(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.rotate_secret"}), "auditLogs")
	if len(audit) != 1 || audit[0]["targetID"] != epID {
		t.Fatalf("rotation audit: %v", audit)
	}
	// Operators and viewers cannot rotate.
	for _, role := range []string{"operator", "viewer"} {
		newClient(t, 1, token(t, f.tenantID, role)).fail("FORBIDDEN", mHookRotate, map[string]any{"id": epID})
	}
}

// TestWebhookTenantIsolation: another tenant can neither see nor touch an
// endpoint or delivery, and never receives its events.
func TestWebhookTenantIsolation(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "hook-iso-a")
	b := newFixture(t, "hook-iso-b")
	srv := newScriptServer(t)
	aEP, aSecret := hookEndpoint(t, a.owner, srv.URL+"/a")
	bEP, _ := hookEndpoint(t, b.owner, srv.URL+"/b")
	runID, m := hookSucceededRun(t, a.owner, a, srv, "/a")
	hookCheckRun(t, a.owner, srv, "/a", aSecret, runID)
	aDel := hookWaitDelivery(t, a.owner, m.ID, hookWait, "delivered")
	aDelID := aDel["id"].(string)
	aAttID := get(aDel["attemptList"].([]any)[0], "id").(string)

	bOwner := newClient(t, 1, b.owner.token)
	for _, id := range []string{aEP, aDelID, aAttID} {
		if n := get(bOwner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id}), "node"); n != nil {
			t.Fatalf("tenant B sees %s: %v", id, n)
		}
	}
	nodes := bOwner.ok(`query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": []string{aEP, aDelID}})
	for _, n := range nodes["nodes"].([]any) {
		if n != nil {
			t.Fatalf("nodes: %v", nodes)
		}
	}
	eps := edges(bOwner.ok(qHookEndpoints, nil), "webhookEndpoints")
	if len(eps) != 1 || eps[0]["id"] != bEP {
		t.Fatalf("tenant B's endpoints: %v", eps)
	}
	if list := hookDeliveries(t, bOwner, nil); len(list) != 0 {
		t.Fatalf("tenant B's deliveries: %v", list)
	}
	if list := hookDeliveries(t, bOwner, map[string]any{"endpointID": aEP}); len(list) != 0 {
		t.Fatalf("tenant B filtering on A's endpoint: %v", list)
	}
	// Touching A's objects looks exactly like touching made-up ids.
	fakeEP, fakeDel := ids.New(ids.WebhookEndpoint), ids.New(ids.WebhookDelivery)
	for _, tc := range []struct {
		name, q    string
		real, fake map[string]any
	}{
		{"update", mHookUpdate, map[string]any{"in": map[string]any{"id": aEP, "url": srv.URL + "/stolen"}}, map[string]any{"in": map[string]any{"id": fakeEP, "url": srv.URL + "/stolen"}}},
		{"disable", mHookUpdate, map[string]any{"in": map[string]any{"id": aEP, "enabled": false}}, map[string]any{"in": map[string]any{"id": fakeEP, "enabled": false}}},
		{"rotate", mHookRotate, map[string]any{"id": aEP}, map[string]any{"id": fakeEP}},
		{"delete", mHookDelete, map[string]any{"id": aEP}, map[string]any{"id": fakeEP}},
		{"redeliver", mHookRedeliver, map[string]any{"id": aDelID}, map[string]any{"id": fakeDel}},
	} {
		r := bOwner.fail("NOT_FOUND", tc.q, tc.real)
		fr := bOwner.fail("NOT_FOUND", tc.q, tc.fake)
		realMsg := strings.ReplaceAll(strings.ReplaceAll(r.Errors[0].Message, aEP, "ID"), aDelID, "ID")
		fakeMsg := strings.ReplaceAll(strings.ReplaceAll(fr.Errors[0].Message, fakeEP, "ID"), fakeDel, "ID")
		if realMsg != fakeMsg {
			t.Errorf("%s: A's id answers %q, a made-up id %q", tc.name, r.Errors[0].Message, fr.Errors[0].Message)
		}
		if strings.Contains(r.Raw, "whsec_") {
			t.Fatalf("%s leaked a secret: %s", tc.name, r.Raw)
		}
	}
	// A's endpoint is untouched: same URL, enabled, same secret, no new audit.
	ep, _ := get(a.owner.ok(qHookEndpoint, map[string]any{"id": aEP}), "node").(map[string]any)
	if ep["url"] != srv.URL+"/a" || ep["enabled"] != true || ep["previousSecretExpiresAt"] != nil {
		t.Fatalf("A's endpoint changed: %v", ep)
	}
	for _, action := range []string{"webhook_endpoint.update", "webhook_endpoint.rotate_secret", "webhook_endpoint.delete", "webhook_delivery.redeliver"} {
		if n := get(a.owner.ok(qHookAudit, map[string]any{"a": action}), "auditLogs.totalCount"); n != float64(0) {
			t.Errorf("A has %v %s audit entries", n, action)
		}
	}
	_, m2 := hookSucceededRun(t, a.owner, a, srv, "/a")
	mustVerify(t, m2, aSecret, "A after B's attempts")

	// A's events never reached B's endpoint; B's own run does.
	if n := len(hookMsgs(t, srv, "/b")); n != 0 {
		t.Fatalf("B's endpoint received %d of A's messages", n)
	}
	bRun := engStart(t, b.owner, b, b.workflowID, map[string]any{"name": "b"})
	engFinish(t, b.owner, bRun, "succeeded")
	for _, bm := range hookWaitMsgs(t, srv, "/b", 2, nil) {
		if bm.runID() != bRun || str(bm.Data, "tenantID") != b.tenantID {
			t.Fatalf("B's endpoint received %v", bm.Data)
		}
	}
	for _, am := range hookMsgs(t, srv, "/a") {
		if str(am.Data, "tenantID") != a.tenantID {
			t.Fatalf("A's endpoint received %v", am.Data)
		}
	}
}

// TestWebhookSecretNeverLeaks: the signing secret is in the create and
// rotate responses and nowhere else: not in payloads, headers, logs, audit
// entries, other GraphQL responses, or the database in the clear.
func TestWebhookSecretNeverLeaks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-leak")
	srv := newScriptServer(t)
	srv.script("/leak", reply{Status: 500}, reply{Status: 200})
	create := f.owner.do(mHookCreate, map[string]any{"u": srv.URL + "/leak", "d": "leak check"})
	epID, s1 := str(create.Data, "createWebhookEndpoint.endpoint.id"), str(create.Data, "createWebhookEndpoint.secret")
	if !strings.Contains(create.Raw, s1) || s1 == "" {
		t.Fatalf("create: %s", create.Raw)
	}
	rot := f.owner.do(mHookRotate, map[string]any{"id": epID})
	s2 := str(rot.Data, "rotateWebhookSecret.secret")
	if s2 == "" || !strings.Contains(rot.Raw, s2) {
		t.Fatalf("rotate: %s", rot.Raw)
	}
	runID := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "leak"})
	engFinish(t, f.owner, runID, "succeeded")
	hookWaitMsgs(t, srv, "/leak", 3, forRun(runID)) // two events, one retried
	for _, m := range hookMsgs(t, srv, "/leak") {
		hookWaitDelivery(t, f.owner, m.ID, hookWait, "delivered")
	}
	f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "description": "still secret-free"}})

	var texts []string
	for _, m := range hookMsgs(t, srv, "/leak") {
		h, _ := json.Marshal(m.Header)
		texts = append(texts, "payload "+string(m.Body), "headers "+string(h))
	}
	responses := []string{
		f.owner.do(qHookEndpoints, nil).Raw,
		f.owner.do(qHookEndpoint, map[string]any{"id": epID}).Raw,
		f.owner.do(qHookDeliveries, nil).Raw,
		f.owner.do(mHookUpdate, map[string]any{"in": map[string]any{"id": epID}}).Raw,
		f.owner.do(`{ auditLogs(first: 1000) { edges { node { action targetID metadata } } } }`, nil).Raw,
		f.owner.do(qHookRunEvents, map[string]any{"id": runID}).Raw,
	}
	for _, r := range responses {
		texts = append(texts, "graphql "+r)
	}
	texts = append(texts, "api logs "+allLogs())
	for i, w := range suite.workers {
		texts = append(texts, fmt.Sprintf("worker %d logs %s", i, w.Logs()))
	}
	for _, s := range []string{s1, s2} {
		raw := strings.TrimPrefix(s, "whsec_")
		for _, text := range texts {
			if strings.Contains(text, raw) {
				where, _, _ := strings.Cut(text, " ")
				t.Fatalf("a webhook secret appears in %s", where)
			}
		}
	}
	// Stored encrypted: the column holds neither the secret nor its key.
	admin, err := sql.Open("pgx", suite.ownerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var cur, prev []byte
	err = admin.QueryRow(`SELECT secret, previous_secret FROM webhook_endpoints WHERE id = $1`, epID).Scan(&cur, &prev)
	if err == sql.ErrNoRows {
		t.Skip("the admin URL's role does not bypass row-level security; stored secrets not checked")
	}
	if err != nil {
		t.Fatalf("read stored secret: %v", err)
	}
	for _, s := range []string{s1, s2} {
		raw := strings.TrimPrefix(s, "whsec_")
		if strings.Contains(string(cur), raw) || strings.Contains(string(prev), raw) || len(cur) == 0 || len(prev) == 0 {
			t.Fatal("a webhook secret is stored in the clear")
		}
	}
}

// TestWebhookSSRF: endpoints aimed at loopback (outside the suite's
// allowed range), private, link-local or metadata addresses are refused,
// and the policy is applied again when a delivery connects.
func TestWebhookSSRF(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-ssrf")
	for _, u := range []string{
		"http://10.0.0.1/x",
		"http://169.254.169.254/latest",
		"http://169.254.170.2/v2/credentials",
		"http://[::1]/",
		"http://[::ffff:10.0.0.1]/",
		"http://192.168.1.1",
		"http://172.16.0.1/hook",
		"http://100.64.0.1/",
		"http://0.0.0.0/",
		"http://[fd00:ec2::254]/",
		"http://[fe80::1]/",
		"http://10.0.0.1:8443/x",
	} {
		r := f.owner.fail("VALIDATION", mHookCreate, map[string]any{"u": u})
		if !hasProblemAt(r, "input.url") {
			t.Errorf("%s: want a problem at input.url, got %s", u, r.Raw)
		}
		if strings.Contains(r.Raw, "whsec_") {
			t.Fatalf("%s: a refused create returned a secret: %s", u, r.Raw)
		}
	}
	if n := get(f.owner.ok(qHookEndpoints, nil), "webhookEndpoints.totalCount"); n != float64(0) {
		t.Fatalf("%v endpoints written", n)
	}
	if n := get(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.create"}), "auditLogs.totalCount"); n != float64(0) {
		t.Fatalf("%v create audit entries", n)
	}

	// An existing endpoint cannot be moved to a private address either.
	srv := newScriptServer(t)
	epID, _ := hookEndpoint(t, f.owner, srv.URL+"/ok")
	for _, u := range []string{"http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/"} {
		r := f.owner.fail("VALIDATION", mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "url": u}})
		if !hasProblemAt(r, "input.url") {
			t.Errorf("update to %s: want a problem at input.url, got %s", u, r.Raw)
		}
	}
	if ep := get(f.owner.ok(qHookEndpoint, map[string]any{"id": epID}), "node"); str(ep, "url") != srv.URL+"/ok" {
		t.Fatalf("endpoint after refused updates: %v", ep)
	}

	// At delivery the address is checked again where the connection is
	// made (what protects against DNS answers changing after creation).
	// Simulated with a stack whose egress policy allows no private range:
	// the endpoint passed creation on the suite's servers (127.0.0.0/8 is
	// allowed there); the stack's worker refuses to connect to it.
	st := newStack(t, 1, "SLUICE_EGRESS_ALLOW_CIDRS=")
	strict := f.owner.on(st.server)
	strict.fail("VALIDATION", mHookCreate, map[string]any{"u": srv.URL + "/strict"}) // creation refuses it there
	runID := engStart(t, strict, f, f.workflowID, map[string]any{"name": "ssrf"})
	engFinish(t, strict, runID, "succeeded")
	var list []map[string]any
	eventually(t, hookWait, func() (bool, string) {
		list = hookDeliveries(t, strict, map[string]any{"runID": runID})
		return len(list) == 2 && !slices.ContainsFunc(list, func(d map[string]any) bool { return d["status"] == "pending" }), fmt.Sprintf("deliveries: %v", list)
	})
	for _, d := range list {
		if d["status"] != "exhausted" || d["attempts"] != float64(1) || !strings.Contains(str(d, "lastError"), "not allowed") || d["lastStatusCode"] != nil {
			t.Fatalf("delivery to a refused address: %v", d)
		}
		att := d["attemptList"].([]any)[0]
		if get(att, "statusCode") != nil || !strings.Contains(str(att, "error"), "not allowed") {
			t.Fatalf("attempt: %v", att)
		}
	}
	if n := len(srv.calls("/ok")); n != 0 {
		t.Fatalf("the refused address received %d requests", n)
	}
}

// TestWebhookBadInput: invalid endpoints are refused with VALIDATION at the
// field's path, and nothing is written.
func TestWebhookBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-bad")
	srv := newScriptServer(t)
	good := srv.URL + "/hook"
	long := strings.Repeat("x", 501)
	for _, tc := range []struct {
		name string
		vars map[string]any
		path string
	}{
		{"unknown event type", map[string]any{"u": good, "t": []string{"run.succeeded", "run.exploded"}}, "input.eventTypes[1]"},
		{"non-catalog run event", map[string]any{"u": good, "t": []string{"step.started"}}, "input.eventTypes[0]"},
		{"malformed URL", map[string]any{"u": "not a url"}, "input.url"},
		{"relative URL", map[string]any{"u": "/hooks/x"}, "input.url"},
		{"no host", map[string]any{"u": "http://"}, "input.url"},
		{"ftp scheme", map[string]any{"u": "ftp://127.0.0.1/x"}, "input.url"},
		{"credentials in URL", map[string]any{"u": strings.Replace(good, "http://", "http://user:pw@", 1)}, "input.url"},
		{"empty URL", map[string]any{"u": ""}, "input.url"},
		{"unresolvable host", map[string]any{"u": "http://no-such-host.invalid/x"}, "input.url"},
		{"description too long", map[string]any{"u": good, "d": long}, "input.description"},
	} {
		r := f.owner.fail("VALIDATION", mHookCreate, tc.vars)
		if !hasProblemAt(r, tc.path) {
			t.Errorf("%s: want a problem at %s, got %s", tc.name, tc.path, r.Raw)
		}
	}
	if n := get(f.owner.ok(qHookEndpoints, nil), "webhookEndpoints.totalCount"); n != float64(0) {
		t.Fatalf("%v endpoints written", n)
	}
	if n := get(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.create"}), "auditLogs.totalCount"); n != float64(0) {
		t.Fatalf("%v create audit entries", n)
	}
	// A description of exactly 500 characters is fine.
	epID, _ := hookEndpoint(t, f.owner, good)
	f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "description": long[:500]}})
	for _, tc := range []struct {
		name string
		in   map[string]any
		path string
	}{
		{"unknown event type", map[string]any{"id": epID, "eventTypes": []string{"nope"}}, "input.eventTypes[0]"},
		{"malformed URL", map[string]any{"id": epID, "url": "::"}, "input.url"},
		{"description too long", map[string]any{"id": epID, "description": long}, "input.description"},
		{"bad field with good ones", map[string]any{"id": epID, "url": srv.URL + "/other", "eventTypes": []string{"run.failed"}, "description": long}, "input.description"},
	} {
		r := f.owner.fail("VALIDATION", mHookUpdate, map[string]any{"in": tc.in})
		if !hasProblemAt(r, tc.path) {
			t.Errorf("update %s: want a problem at %s, got %s", tc.name, tc.path, r.Raw)
		}
	}
	ep, _ := get(f.owner.ok(qHookEndpoint, map[string]any{"id": epID}), "node").(map[string]any)
	if types, _ := ep["eventTypes"].([]any); ep["url"] != good || len(types) != 0 || len(str(ep, "description")) != 500 {
		t.Fatalf("endpoint changed by refused updates: %v", ep)
	}
	if n := get(f.owner.ok(qHookAudit, map[string]any{"a": "webhook_endpoint.update"}), "auditLogs.totalCount"); n != float64(1) {
		t.Fatalf("%v update audit entries, want 1", n)
	}
	// Only admins manage endpoints.
	for _, role := range []string{"operator", "viewer"} {
		c := newClient(t, 1, token(t, f.tenantID, role))
		c.fail("FORBIDDEN", mHookCreate, map[string]any{"u": good})
		c.fail("FORBIDDEN", mHookUpdate, map[string]any{"in": map[string]any{"id": epID, "enabled": false}})
		c.fail("FORBIDDEN", mHookDelete, map[string]any{"id": epID})
	}
	// Deleting removes the endpoint; a second delete is NOT_FOUND.
	if got := str(f.owner.ok(mHookDelete, map[string]any{"id": epID}), "deleteWebhookEndpoint"); got != epID {
		t.Fatalf("delete returned %q", got)
	}
	f.owner.fail("NOT_FOUND", mHookDelete, map[string]any{"id": epID})
	if n := get(f.owner.ok(qHookEndpoints, nil), "webhookEndpoints.totalCount"); n != float64(0) {
		t.Fatalf("%v endpoints after delete", n)
	}
}
