package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	mCreateEsc = `mutation($in: CreateEscalationPolicyInput!) { createEscalationPolicy(input: $in) { id name repeat levels { delay condition targets { webhookEndpointID role pagerDuty { credentialID severity } } } } }`
	mUpdateEsc = `mutation($in: UpdateEscalationPolicyInput!) { updateEscalationPolicy(input: $in) { id name levels { delay } } }`
	mDeleteEsc = `mutation($id: ID!) { deleteEscalationPolicy(id: $id) }`
	qEscOf     = `query($s: String!) { escalations(where: {subjectID: $s}) { edges { node { id status subjectKind dedupKey level loop nextFireAt
		levels { delay targets { webhookEndpointID pagerDuty { credentialID } } }
		firings { level loop outcome webhookDeliveryIDs pagerDutySendIDs }
		pagerDutySends { edges { node { action status attempts dedupKey attemptList { statusCode } } } } } } } }`
	qApprovalsOf = `query($r: ID!) { approvals(where: {runID: $r}) { edges { node { id status } } } }`
	mDecide      = `mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`
)

// escalationOf reads the escalation of a subject.
func escalationOf(t *testing.T, c *client, subjectID string) map[string]any {
	t.Helper()
	list := edges(c.ok(qEscOf, map[string]any{"s": subjectID}), "escalations")
	if len(list) != 1 {
		t.Fatalf("escalations of %s: %v", subjectID, list)
	}
	return list[0]
}

// pdEvents decodes the events the PagerDuty-shaped receiver got.
func pdEvents(s *scriptServer) []map[string]any {
	var out []map[string]any
	for _, r := range s.calls("/pd") {
		var ev map[string]any
		if json.Unmarshal(r.Body, &ev) == nil {
			out = append(out, ev)
		}
	}
	return out
}

func pdWait(t *testing.T, s *scriptServer, action, dedup string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 20*time.Second, func() (bool, string) {
		for _, ev := range pdEvents(s) {
			if ev["event_action"] == action && ev["dedup_key"] == dedup {
				found = ev
				return true, ""
			}
		}
		return false, fmt.Sprintf("no %s for %s in %v", action, dedup, pdEvents(s))
	})
	return found
}

// An approval step names a two-level policy (1s: a webhook endpoint; 3s:
// PagerDuty). Run A is decided after level 1: its escalation is resolved
// with one level fired and no timer left, and PagerDuty hears nothing of
// it. Run B is left open: level 2 triggers PagerDuty with dedup_key
// "approval:<id>", and deciding it sends resolve with the same key. Each
// level is an approval.escalated event in the run's log. Editing the policy
// meanwhile changes neither escalation's levels.
func TestEscalationApprovalLevels(t *testing.T) {
	t.Parallel()
	recv := newScriptServer(t)
	recv.script("/pd", reply{Status: 202, Body: map[string]any{"status": "success", "message": "Event processed"}})
	f := newFixture(t, "esc")
	owner := f.owner
	hook, _ := hookEndpoint(t, owner, recv.URL+"/hook", "run.failed") // not subscribed: it is the level's target
	cred := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "pagerduty", "t": "pagerduty", "s": map[string]any{"routingKey": "R0UTING", "eventsURL": recv.URL + "/pd"}}), "createCredential.id")
	pol := owner.ok(mCreateEsc, map[string]any{"in": map[string]any{"name": "approvals", "levels": []any{
		map[string]any{"delay": "1s", "targets": []any{map[string]any{"webhookEndpointID": hook}}},
		map[string]any{"delay": "3s", "targets": []any{map[string]any{"pagerDuty": map[string]any{"credentialID": cred}}}},
	}}})
	policyID := str(pol, "createEscalationPolicy.id")
	if lv := get(pol, "createEscalationPolicy.levels").([]any); len(lv) != 2 || get(lv[0], "condition") != "IF_NOT_ACKNOWLEDGED" {
		t.Fatalf("default condition: %v", pol)
	}
	wf, _ := deployWorkflow(t, f, "esc-approval", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "escalation": "approvals", "message": "ship it?"},
	}})
	approvalOf := func(runID string) string {
		var id string
		eventually(t, 20*time.Second, func() (bool, string) {
			list := edges(owner.ok(qApprovalsOf, map[string]any{"r": runID}), "approvals")
			if len(list) == 1 {
				id = str(list[0], "id")
			}
			return id != "", "no approval yet for " + runID
		})
		return id
	}
	runA := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	runB := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	aprA, aprB := approvalOf(runA), approvalOf(runB)

	// Level 1 reaches the endpoint for both approvals.
	for _, apr := range []string{aprA, aprB} {
		hookWaitMsgs(t, recv, "/hook", 1, func(m hookMsg) bool {
			return m.Type == "approval.escalated" && str(m.Data, "approvalID") == apr && get(m.Data, "level") == float64(1)
		})
	}
	operator := newClient(t, 0, token(t, f.tenantID, "operator"))
	operator.ok(mDecide, map[string]any{"id": aprA})
	escA := escalationOf(t, owner, aprA)
	if str(escA, "status") != "resolved" || get(escA, "nextFireAt") != nil || len(get(escA, "firings").([]any)) != 1 || str(escA, "dedupKey") != "approval:"+aprA {
		t.Fatalf("escalation of the approval decided before level 2: %v", escA)
	}

	// Another tenant sees neither the escalation nor its policy.
	other := newClient(t, 0, token(t, newTenant(t, "escx"), "owner"))
	if r := other.do(`query($a: ID!, $b: ID!) { nodes(ids: [$a, $b]) { id } }`, map[string]any{"a": str(escA, "id"), "b": policyID}); !strings.Contains(r.Raw, `"nodes":[null,null]`) {
		t.Errorf("another tenant reads the escalation or policy: %s", r.Raw)
	}
	if r := other.ok(`{ escalations { totalCount } escalationPolicies { totalCount } }`, nil); get(r, "escalations.totalCount") != float64(0) || get(r, "escalationPolicies.totalCount") != float64(0) {
		t.Errorf("another tenant lists: %v", r)
	}
	other.fail("NOT_FOUND", mUpdateEsc, map[string]any{"in": map[string]any{"id": policyID, "repeat": 3}})

	// The policy is edited while B's escalation runs.
	owner.ok(mUpdateEsc, map[string]any{"in": map[string]any{"id": policyID, "levels": []any{
		map[string]any{"delay": "1h", "targets": []any{map[string]any{"role": "admin"}}}}}})

	trig := pdWait(t, recv, "trigger", "approval:"+aprB)
	if trig["routing_key"] != "R0UTING" || get(trig, "payload.severity") != "warning" || get(trig, "payload.source") != "sluice" ||
		!strings.Contains(str(trig, "payload.summary"), "review") || get(trig, "payload.custom_details.approvalID") != aprB {
		t.Fatalf("trigger: %v", trig)
	}
	escB := escalationOf(t, owner, aprB)
	if levels := get(escB, "levels").([]any); len(levels) != 2 || get(levels[0], "delay") != "1s" {
		t.Fatalf("B's levels changed with the policy: %v", levels)
	}
	operator.ok(mDecide, map[string]any{"id": aprB})
	pdWait(t, recv, "resolve", "approval:"+aprB)
	waitRun(t, owner, runB, 20*time.Second, "succeeded")
	run := waitRun(t, owner, runA, 20*time.Second, "succeeded")
	var levelsA []float64
	for _, e := range run["events"].([]any) {
		if ev := e.(map[string]any); ev["type"] == "approval.escalated" {
			levelsA = append(levelsA, get(ev, "data.level").(float64))
		}
	}
	if !slices.Equal(levelsA, []float64{1}) {
		t.Errorf("run A's approval.escalated levels: %v", levelsA)
	}
	// Both PagerDuty sends are recorded as sent, with their tries.
	eventually(t, 20*time.Second, func() (bool, string) {
		escB = escalationOf(t, owner, aprB)
		var got []string
		for _, s := range edges(escB, "pagerDutySends") {
			codes, _ := get(s, "attemptList").([]any)
			got = append(got, fmt.Sprintf("%s %s %d %v", str(s, "action"), str(s, "status"), len(codes), s["dedupKey"]))
		}
		slices.Sort(got)
		want := []string{"resolve sent 1 approval:" + aprB, "trigger sent 1 approval:" + aprB}
		return slices.Equal(got, want), fmt.Sprintf("sends %v, want %v", got, want)
	})
	if str(escB, "status") != "resolved" || len(get(escB, "firings").([]any)) != 2 {
		t.Fatalf("B: %v", escB)
	}
	// PagerDuty never heard of A.
	for _, ev := range pdEvents(recv) {
		if ev["dedup_key"] == "approval:"+aprA {
			t.Errorf("pagerduty got an event for A: %v", ev)
		}
	}
}

// Escalation policies are tenant data: another tenant neither reads,
// updates nor deletes them, and cannot attach its endpoints or
// credentials. Bad input is VALIDATION with the path, and writes nothing;
// viewers read but do not write; every change is audited; a definition
// naming an unknown policy is refused at publish.
func TestEscalationPolicyIsolationAndValidation(t *testing.T) {
	a, b := newFixture(t, "esca"), newFixture(t, "escb")
	hookA, _ := hookEndpoint(t, a.owner, "http://127.0.0.1:9/a")
	credA := str(a.owner.ok(mCreateCred, map[string]any{"e": a.envID, "n": "pd", "t": "pagerduty", "s": map[string]any{"routingKey": "K"}}), "createCredential.id")
	lvl := func(target map[string]any) []any {
		return []any{map[string]any{"delay": "1m", "targets": []any{target}}}
	}
	polA := str(a.owner.ok(mCreateEsc, map[string]any{"in": map[string]any{"name": "p", "repeat": 1, "levels": lvl(map[string]any{"webhookEndpointID": hookA})}}), "createEscalationPolicy.id")
	if !strings.HasPrefix(polA, "esp_") {
		t.Fatalf("id %s", polA)
	}
	if r := b.owner.do(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": polA}); get(r.Data, "node") != nil {
		t.Errorf("B reads A's policy: %s", r.Raw)
	}
	if n := get(b.owner.ok(`{ escalationPolicies { totalCount } }`, nil), "escalationPolicies.totalCount"); n != float64(0) {
		t.Errorf("B lists %v policies", n)
	}
	b.owner.fail("NOT_FOUND", mUpdateEsc, map[string]any{"in": map[string]any{"id": polA, "name": "mine"}})
	b.owner.fail("NOT_FOUND", mDeleteEsc, map[string]any{"id": polA})

	bad := []struct {
		path string
		in   map[string]any
	}{
		{"input.levels[0].targets[0].webhookEndpointID", map[string]any{"name": "x", "levels": lvl(map[string]any{"webhookEndpointID": hookA})}},
		{"input.levels[0].targets[0].pagerDuty.credentialID", map[string]any{"name": "x", "levels": lvl(map[string]any{"pagerDuty": map[string]any{"credentialID": credA}})}},
		{"input.levels[0].targets[0].pagerDuty.credentialID", map[string]any{"name": "x", "levels": lvl(map[string]any{"pagerDuty": map[string]any{"credentialID": b.credentialID}})}},
		{"input.levels[0].delay", map[string]any{"name": "x", "levels": []any{map[string]any{"delay": "-5s", "targets": []any{map[string]any{"role": "operator"}}}}}},
		{"input.levels", map[string]any{"name": "x", "levels": []any{}}},
		{"input.levels", map[string]any{"name": "x", "levels": slices.Repeat(lvl(map[string]any{"role": "operator"}), 11)}},
		{"input.levels[0].targets[0].role", map[string]any{"name": "x", "levels": lvl(map[string]any{"role": "boss"})}},
		{"input.repeat", map[string]any{"name": "x", "repeat": 11, "levels": lvl(map[string]any{"role": "operator"})}},
	}
	for _, tc := range bad {
		r := b.owner.fail("VALIDATION", mCreateEsc, map[string]any{"in": tc.in})
		if !strings.Contains(r.Raw, `"`+tc.path+`"`) {
			t.Errorf("want a problem at %s: %s", tc.path, r.Raw)
		}
	}
	if n := get(b.owner.ok(`{ escalationPolicies { totalCount } }`, nil), "escalationPolicies.totalCount"); n != float64(0) {
		t.Errorf("bad input wrote %v policies", n)
	}
	viewer := newClient(t, 0, token(t, a.tenantID, "viewer"))
	if n := get(viewer.ok(`{ escalationPolicies { totalCount edges { node { name levels { delay } } } } }`, nil), "escalationPolicies.totalCount"); n != float64(1) {
		t.Errorf("viewer reads %v policies", n)
	}
	viewer.fail("FORBIDDEN", mCreateEsc, map[string]any{"in": map[string]any{"name": "v", "levels": lvl(map[string]any{"role": "operator"})}})
	a.owner.fail("CONFLICT", mCreateEsc, map[string]any{"in": map[string]any{"name": "p", "levels": lvl(map[string]any{"role": "operator"})}})
	a.owner.ok(mUpdateEsc, map[string]any{"in": map[string]any{"id": polA, "name": "q"}})

	// A definition naming an unknown policy is refused at publish.
	wf := str(a.owner.ok(mCreateWF, map[string]any{"n": "e", "s": "esc-unknown"}), "createWorkflow.id")
	v := str(a.owner.ok(mCreateVer, map[string]any{"w": wf, "d": map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "ok", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "escalation": "nope"}}}}), "createWorkflowVersion.id")
	if r := a.owner.fail("VALIDATION", mPublish, map[string]any{"id": v}); !strings.Contains(r.Raw, "steps[0].escalation") {
		t.Errorf("publish with an unknown policy: %s", r.Raw)
	}

	a.owner.ok(mDeleteEsc, map[string]any{"id": polA})
	var actions []string
	for _, e := range edges(a.owner.ok(`{ auditLogs(first: 50, where: {targetType: "EscalationPolicy"}) { edges { node { action targetID } } } }`, nil), "auditLogs") {
		actions = append(actions, str(e, "action"))
	}
	slices.Sort(actions)
	if !slices.Equal(actions, []string{"escalation_policy.create", "escalation_policy.delete", "escalation_policy.update"}) {
		t.Errorf("audit: %v", actions)
	}
}

// An approval's escalation ends with the approval however it ends: its
// timeout (onTimeout still decides the step) or the run being cancelled.
func TestEscalationResolvedByTimeoutAndCancel(t *testing.T) {
	f := newFixture(t, "escend")
	f.owner.ok(mCreateEsc, map[string]any{"in": map[string]any{"name": "slow", "levels": []any{
		map[string]any{"delay": "1h", "targets": []any{map[string]any{"role": "operator"}}}}}})
	wf, _ := deployWorkflow(t, f, "esc-end", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}},
			"escalation": "slow", "timeout": "1s", "onTimeout": "approve"},
	}})
	wfCancel, _ := deployWorkflow(t, f, "esc-cancel", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "escalation": "slow"},
	}})
	timed := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	cancelled := str(f.owner.ok(mStartRun, map[string]any{"w": wfCancel, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	waitRun(t, f.owner, timed, 20*time.Second, "succeeded")
	waitRun(t, f.owner, cancelled, 20*time.Second, "waiting")
	f.owner.ok(`mutation($id: ID!) { cancelRun(id: $id) { id } }`, map[string]any{"id": cancelled})
	// A key scoped to another environment sees neither escalation; one
	// scoped to the runs' environment sees both. Neither manages policies.
	for env, want := range map[string]float64{f.prodEnvID: 0, f.envID: 2} {
		key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "scoped", roles: [ADMIN], environmentID: $e}) { token } }`, map[string]any{"e": env})
		scoped := newClient(t, 0, str(key, "createAPIKey.token"))
		if n := get(scoped.ok(`{ escalations { totalCount } }`, nil), "escalations.totalCount"); n != want {
			t.Errorf("key scoped to %s sees %v escalations, want %v", env, n, want)
		}
		scoped.fail("FORBIDDEN", mCreateEsc, map[string]any{"in": map[string]any{"name": "s", "levels": []any{
			map[string]any{"delay": "1m", "targets": []any{map[string]any{"role": "operator"}}}}}})
	}
	for _, runID := range []string{timed, cancelled} {
		list := edges(f.owner.ok(qApprovalsOf, map[string]any{"r": runID}), "approvals")
		if len(list) != 1 {
			t.Fatalf("approvals of %s: %v", runID, list)
		}
		e := escalationOf(t, f.owner, str(list[0], "id"))
		if fired, _ := get(e, "firings").([]any); str(e, "status") != "resolved" || get(e, "nextFireAt") != nil || len(fired) != 0 {
			t.Errorf("escalation of run %s: %v", runID, e)
		}
	}
}
