package e2e

import (
	"fmt"
	"testing"
	"time"
)

const qIncidentEscalation = `query($id: ID!) { node(id: $id) { ... on Incident { id key status escalation { id status level
	nextFireAt levels { delay } firings { level outcome } pagerDutySends { totalCount } } } } }`

// incidentOfRun waits for the incident a run's breach opened and returns it.
func incidentOfRun(t *testing.T, c *client, runID string) map[string]any {
	t.Helper()
	var inc map[string]any
	eventually(t, 30*time.Second, func() (bool, string) {
		r := get(c.ok(qRunSLA, map[string]any{"id": runID}), "node").(map[string]any)
		b, _ := r["slaBreaches"].([]any)
		if len(b) == 0 {
			return false, fmt.Sprintf("run %s has no breach yet", runID)
		}
		inc = get(c.ok(qIncidentEscalation, map[string]any{"id": str(b[0], "incident.id")}), "node").(map[string]any)
		return true, ""
	})
	return inc
}

// TestSLAIncidentEscalates: an SLA objective names an escalation policy;
// its incident escalates as the policy's levels say.
//   - Workflow "acked" (levels 1s: a webhook endpoint, 20s: PagerDuty): level
//     1 reaches the webhook receiver as incident.escalated; acknowledging the
//     incident stops the escalation before level 2 (its recorded state: no
//     timer left, one level fired, nothing sent to PagerDuty).
//   - Workflow "paged" (levels 1s: the webhook endpoint, 3s: PagerDuty):
//     the policy is edited while the incident is open (PagerDuty removed),
//     and level 2 still triggers PagerDuty with dedup_key = the incident's
//     key; resolving the incident sends resolve with the same key.
func TestSLAIncidentEscalates(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sla-esc")
	recv := newScriptServer(t)
	recv.script("/pd", reply{Status: 202, Body: map[string]any{"status": "success", "message": "Event processed"}})
	hook, _ := hookEndpoint(t, f.owner, recv.URL+"/level", "run.failed") // a level's target gets incident.escalated anyway
	cred := str(f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "pagerduty", "t": "pagerduty",
		"s": map[string]any{"routingKey": "R0UTING", "eventsURL": recv.URL + "/pd"}}), "createCredential.id")
	policy := func(name, second string) string {
		return str(f.owner.ok(mCreateEsc, map[string]any{"in": map[string]any{"name": name, "levels": []any{
			map[string]any{"delay": "1s", "targets": []any{map[string]any{"webhookEndpointID": hook}}},
			map[string]any{"delay": second, "targets": []any{map[string]any{"pagerDuty": map[string]any{"credentialID": cred}}}},
		}}}), "createEscalationPolicy.id")
	}
	slow := policy("slow-second", "20s")
	fast := policy("fast-second", "3s")
	workflow := func(slug, esc string) string {
		wf, _ := deployWorkflow(t, f, slug, delayWorkflow("8s"))
		f.owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf, "objectives": map[string]any{
			"maxDuration": map[string]any{"duration": "1s", "severity": "CRITICAL", "escalationPolicyID": esc}}}})
		return wf
	}
	// Another tenant can neither name this tenant's escalation policy nor
	// attach a policy to its workflow: VALIDATION at the field, nothing written.
	other := newFixture(t, "sla-esc-b")
	before := get(other.owner.ok(qSLAPolicies, nil), "slaPolicies.totalCount")
	r := other.owner.fail("VALIDATION", mSLACreate, map[string]any{"in": map[string]any{"objectives": map[string]any{
		"maxDuration": map[string]any{"duration": "1m", "severity": "ERROR", "escalationPolicyID": slow}}}})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "input.objectives.maxDuration.escalationPolicyID" {
		t.Errorf("a foreign escalation policy: path %q: %s", p, r.Raw)
	}
	if n := get(other.owner.ok(qSLAPolicies, nil), "slaPolicies.totalCount"); n != before {
		t.Errorf("a refused policy was written: %v policies, %v before", n, before)
	}
	acked := workflow("acked", slow)
	paged := workflow("paged", fast)
	run := func(wf string) string {
		return str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	}
	ackedRun, pagedRun := run(acked), run(paged)

	// The paged incident: its policy loses the PagerDuty level while it is open.
	inc := incidentOfRun(t, f.owner, pagedRun)
	esc, _ := inc["escalation"].(map[string]any)
	if esc == nil || str(esc, "status") != "active" || len(esc["levels"].([]any)) != 2 {
		t.Fatalf("the paged incident's escalation: %v", inc)
	}
	f.owner.ok(mUpdateEsc, map[string]any{"in": map[string]any{"id": fast, "levels": []any{
		map[string]any{"delay": "1s", "targets": []any{map[string]any{"webhookEndpointID": hook}}}}}})
	trigger := pdWait(t, recv, "trigger", str(inc, "key"))
	if str(trigger, "routing_key") != "R0UTING" || str(trigger, "payload.severity") != "critical" || str(trigger, "payload.component") != paged {
		t.Errorf("PagerDuty trigger %v", trigger)
	}
	hookWaitMsgs(t, recv, "/level", 1, func(m hookMsg) bool {
		return m.Type == "incident.escalated" && str(m.Data, "incidentID") == str(inc, "id") && m.Data["level"] == float64(1)
	})
	f.owner.ok(mIncRes, map[string]any{"id": str(inc, "id"), "n": "recovered"})
	pdWait(t, recv, "resolve", str(inc, "key"))

	// The acknowledged incident: level 1, then the acknowledgement stops it.
	inc = incidentOfRun(t, f.owner, ackedRun)
	hookWaitMsgs(t, recv, "/level", 1, func(m hookMsg) bool {
		return m.Type == "incident.escalated" && str(m.Data, "incidentID") == str(inc, "id")
	})
	f.owner.ok(mIncAck, map[string]any{"id": str(inc, "id"), "n": "on it"})
	esc = get(f.owner.ok(qIncidentEscalation, map[string]any{"id": str(inc, "id")}), "node.escalation").(map[string]any)
	firings, _ := esc["firings"].([]any)
	if str(esc, "status") != "acknowledged" || esc["nextFireAt"] != nil || len(firings) != 1 || get(esc, "pagerDutySends.totalCount") != float64(0) {
		t.Fatalf("the acknowledged incident's escalation: %v", esc)
	}
	for _, ev := range pdEvents(recv) {
		if ev["dedup_key"] == str(inc, "key") {
			t.Errorf("PagerDuty heard of the acknowledged incident: %v", ev)
		}
	}
}
