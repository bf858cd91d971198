package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// The SLA tests define policies over GraphQL, run workflows, and watch
// breaches arrive at a webhook receiver and incidents appear, as a client
// would. Sweep and window intervals are shortened through configuration
// (SLUICE_SLA_SWEEP_INTERVAL, SLUICE_SLA_WINDOW_INTERVAL) on a stack of
// their own where the default would be too slow.

const (
	mSLACreate = `mutation($in: CreateSLAPolicyInput!) { createSLAPolicy(input: $in) { id scope workflowID environmentID
		objectives { maxDuration { duration severity escalationPolicyID } minSuccessRate { rate window minRuns countPermanent severity } } } }`
	mSLAUpdate    = `mutation($in: UpdateSLAPolicyInput!) { updateSLAPolicy(input: $in) { id objectives { maxDuration { duration } } } }`
	mSLADelete    = `mutation($id: ID!) { deleteSLAPolicy(id: $id) }`
	qSLAPolicies  = `{ slaPolicies(first: 50) { totalCount edges { node { id scope } } } }`
	qSLAEffective = `query($w: ID!, $e: ID!) { effectiveSLA(workflowID: $w, environmentID: $e) {
		objectives { maxDuration { duration severity } maxQueueDelay { duration } }
		sources { objective scope severity policy { id } } } }`
	incidentFields = `id key objective status severity count firstSeenAt lastSeenAt sampleRunIDs perRun scope workflowID
		acknowledgedBy acknowledgedAt resolvedBy resolvedAt note details policy { id }`
	qIncidents = `query($w: IncidentsWhereInput) { incidents(first: 50, where: $w) { totalCount edges { node { ` + incidentFields + ` } } } }`
	qIncident  = `query($id: ID!) { node(id: $id) { id ... on Incident { ` + incidentFields + ` } } }`
	mIncAck    = `mutation($id: ID!, $n: String) { acknowledgeIncident(id: $id, note: $n) { id status acknowledgedBy note } }`
	mIncRes    = `mutation($id: ID!, $n: String) { resolveIncident(id: $id, note: $n) { id status resolvedBy note } }`
	qRunSLA    = `query($id: ID!) { node(id: $id) { ... on Run { id status slaDeadlineAt slaQueueDeadlineAt slaBreaches { objective incident { id } } } } }`
)

func delayWorkflow(d string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "wait", "type": "delay", "duration": d}}}
}

func incidentsOf(t *testing.T, c *client, where map[string]any) []map[string]any {
	t.Helper()
	return edges(c.ok(qIncidents, map[string]any{"w": where}), "incidents")
}

// TestSLAMaxDurationBreachArrivesWhileTheRunRuns: a run past its 2s
// maxDuration while it waits on a 10s delay is reported by webhook within
// 10s of its deadline, while it still runs, once; the run goes on.
func TestSLAMaxDurationBreachArrivesWhileTheRunRuns(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sla-duration")
	recv := newScriptServer(t)
	hookEndpoint(t, f.owner, recv.URL+"/sla", "sla.breached", "run.succeeded")
	wf, _ := deployWorkflow(t, f, "slow", delayWorkflow("10s"))
	p := f.owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf,
		"objectives": map[string]any{"maxDuration": map[string]any{"duration": "2s", "severity": "CRITICAL"}}}})
	if str(p, "createSLAPolicy.scope") != "WORKFLOW" {
		t.Fatalf("policy %v", p)
	}
	runID := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	r := get(f.owner.ok(qRunSLA, map[string]any{"id": runID}), "node").(map[string]any)
	deadline, err := time.Parse(time.RFC3339Nano, str(r, "slaDeadlineAt"))
	if err != nil {
		t.Fatalf("slaDeadlineAt: %v (%v)", err, r)
	}
	msgs := hookWaitMsgs(t, recv, "/sla", 1, func(m hookMsg) bool { return m.Type == "sla.breached" })
	late := msgs[0].At.Sub(deadline)
	if late > 10*time.Second || late < 0 {
		t.Errorf("sla.breached arrived %s after the deadline, want within 10s", late)
	}
	m := msgs[0]
	if str(m.Data, "runID") != runID || str(m.Data, "objective") != "maxDuration" || str(m.Data, "severity") != "CRITICAL" || str(m.Data, "incidentID") == "" {
		t.Errorf("sla.breached data %v", m.Data)
	}
	if s := str(get(f.owner.ok(qRunSLA, map[string]any{"id": runID}), "node").(map[string]any), "status"); s != "waiting" {
		t.Errorf("the run is %s when the breach arrived, want still waiting", s)
	}
	// The run finishes as it would have; one incident, one breach.
	waitRun(t, f.owner, runID, 30*time.Second, "succeeded")
	hookWaitMsgs(t, recv, "/sla", 1, func(m hookMsg) bool { return m.Type == "run.succeeded" })
	if n := len(slices.DeleteFunc(hookMsgs(t, recv, "/sla"), func(m hookMsg) bool { return m.Type != "sla.breached" })); n != 1 {
		t.Errorf("%d sla.breached messages, want 1", n)
	}
	list := incidentsOf(t, f.owner, nil)
	if len(list) != 1 || str(list[0], "status") != "TRIGGERED" || list[0]["count"] != float64(1) || list[0]["perRun"] != true {
		t.Fatalf("incidents %v", list)
	}
	r = get(f.owner.ok(qRunSLA, map[string]any{"id": runID}), "node").(map[string]any)
	if b, _ := r["slaBreaches"].([]any); len(b) != 1 || str(b[0], "incident.id") != str(list[0], "id") {
		t.Errorf("run slaBreaches %v", r["slaBreaches"])
	}
}

// TestSLAMinSuccessRate: 30 runs of which 12 fail (transient) against
// minSuccessRate 0.9 with minRuns 20 open one incident; a workflow with 10
// runs in all gets none; once 30 successful runs fill the window, the
// incident resolves by itself.
func TestSLAMinSuccessRate(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_SLA_WINDOW_INTERVAL=2s")
	f := newFixture(t, "sla-rate")
	owner := f.owner.on(st.server)
	api := newScriptServer(t)
	recv := newScriptServer(t)
	hookEndpoint(t, owner, recv.URL+"/sla", "sla.breached", "incident.resolved")
	def := func(path string) map[string]any {
		return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "call", "type": "http",
			"request": map[string]any{"method": "GET", "url": api.URL + path}, "retry": map[string]any{"maxAttempts": 1}}}}
	}
	wf, _ := deployWorkflow(t, f, "flaky", def("/flaky"))
	few, _ := deployWorkflow(t, f, "few", def("/few"))
	objective := map[string]any{"minSuccessRate": map[string]any{"rate": 0.9, "window": "12s", "minRuns": 20, "severity": "ERROR"}}
	owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf, "objectives": objective}})
	owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": few, "objectives": objective}})
	fail := reply{Status: 503, Body: "down"}
	ok := reply{Status: 200, Body: map[string]any{"ok": true}}
	script := func(path string, okN, failN int) {
		var replies []reply
		for i := range okN + failN {
			if i%5 < 2 && failN > 0 { // interleaved
				replies = append(replies, fail)
				failN--
			} else {
				replies = append(replies, ok)
			}
		}
		api.script(path, append(replies, ok)...)
	}
	runAll := func(wf string, n int) []string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
		}
		for _, id := range ids {
			waitRun(t, owner, id, 30*time.Second, "succeeded", "failed")
		}
		return ids
	}
	script("/flaky", 18, 12)
	script("/few", 6, 4)
	runAll(wf, 30)
	runAll(few, 10)
	var inc map[string]any
	eventually(t, 30*time.Second, func() (bool, string) {
		list := incidentsOf(t, owner, map[string]any{"workflowID": wf})
		if len(list) == 1 {
			inc = list[0]
		}
		return inc != nil, fmt.Sprintf("incidents %v", list)
	})
	// The evaluation that opened it may have come while the 30 runs were
	// still finishing (a busy machine), so it saw between minRuns and 30 of
	// them; whichever they were, two in five failed.
	num := func(path string) float64 { v, _ := get(inc, path).(float64); return v }
	n, failed, succeeded := num("details.runs"), num("details.failed"), num("details.succeeded")
	if str(inc, "objective") != "minSuccessRate" || inc["perRun"] != false || n < 20 || n > 30 ||
		failed+succeeded != n || num("details.rate") != succeeded/n || succeeded/n >= 0.9 {
		t.Errorf("incident %v", inc)
	}
	// One more evaluation at least (the window is 12s; a busy machine delays
	// the sweep): still one incident, none for `few`.
	eventually(t, 30*time.Second, func() (bool, string) {
		got := get(owner.ok(qIncident, map[string]any{"id": str(inc, "id")}), "node").(map[string]any)
		return got["count"].(float64) >= 2, fmt.Sprintf("incident count %v", got["count"])
	})
	if list := incidentsOf(t, owner, nil); len(list) != 1 {
		t.Errorf("incidents %v, want only the one of %s (10 runs give no verdict)", list, wf)
	}
	// Healthy traffic from now on: 30 successful runs, then 10 more at a
	// time while the incident is open, so that the sliding window always
	// holds enough runs for a verdict however slowly the machine runs them
	// (the failures must age out of the window while minRuns successes
	// stay in it, for two evaluations in a row).
	script("/flaky", 30, 0)
	runAll(wf, 30)
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := get(owner.ok(qIncident, map[string]any{"id": str(inc, "id")}), "node").(map[string]any)
		if str(got, "status") == "RESOLVED" {
			if str(got, "resolvedBy") != "sluice" {
				t.Fatalf("incident resolved by %v, want sluice", got["resolvedBy"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the incident did not resolve while runs succeeded: %v", got)
		}
		runAll(wf, 10)
	}
	hookWaitMsgs(t, recv, "/sla", 1, func(m hookMsg) bool { return m.Type == "incident.resolved" })
	if n := len(slices.DeleteFunc(hookMsgs(t, recv, "/sla"), func(m hookMsg) bool { return m.Type != "sla.breached" })); n != 1 {
		t.Errorf("%d sla.breached messages, want 1", n)
	}
}

// TestSLABreachesSurviveASweeperKill: breaches due while the worker that
// sweeps is SIGKILLed are each reported once, by the worker left.
func TestSLABreachesSurviveASweeperKill(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1, "SLUICE_SLA_SWEEP_INTERVAL=500ms")
	f := st.fixture(t, "sla-kill")
	owner := f.owner.on(st.server)
	recv := newScriptServer(t)
	hookEndpoint(t, owner, recv.URL+"/sla", "sla.breached")
	wf, _ := deployWorkflow(t, f, "slow", delayWorkflow("30s"))
	owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf,
		"objectives": map[string]any{"maxDuration": map[string]any{"duration": "3s", "severity": "ERROR"}}}})
	// Runs started over 2.4s with a 3s maxDuration: their deadlines fall
	// due one after another, before and after the kill.
	const n = 40
	ids := map[string]bool{}
	tick := time.NewTicker(60 * time.Millisecond)
	for range n {
		<-tick.C
		ids[str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")] = true
	}
	tick.Stop()
	// The only worker sweeps (it holds the lock while it does): kill it as
	// the first breaches arrive, then start another.
	hookWaitMsgs(t, recv, "/sla", 1, nil)
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	killedAfter := len(hookMsgs(t, recv, "/sla"))
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	// Deliveries are at least once (a delivery interrupted by the kill is
	// sent again with its webhook-id): a breach is reported once when one
	// webhook-id carries it. A delivery the killed worker held comes back
	// when its task's lease in the queue ends (30s) and the recoverer
	// hands it out again, so the deadline leaves room beyond that.
	eventually(t, 90*time.Second, func() (bool, string) {
		seen := map[string]bool{}
		for _, m := range hookMsgs(t, recv, "/sla") {
			seen[m.ID] = true
		}
		return len(seen) >= n, fmt.Sprintf("%d breaches reported, want %d", len(seen), n)
	})
	perRun := map[string]map[string]bool{}
	for _, m := range hookMsgs(t, recv, "/sla") {
		id := str(m.Data, "runID")
		if perRun[id] == nil {
			perRun[id] = map[string]bool{}
		}
		perRun[id][m.ID] = true
	}
	for id := range ids {
		if len(perRun[id]) != 1 {
			t.Errorf("run %s reported by %d webhook ids, want 1", id, len(perRun[id]))
		}
	}
	t.Logf("%d of %d breaches had arrived when the sweeping worker was killed", killedAfter, n)
	list := incidentsOf(t, owner, nil)
	if len(list) != 1 || list[0]["count"] != float64(n) {
		t.Errorf("incidents %v, want one with count %d", list, n)
	}
}

// TestSLAIsolationAndBadInput: another tenant cannot see a policy or an
// incident, acknowledge or resolve one, or attach a policy to a foreign
// workflow; bad objectives are VALIDATION at their path and write nothing;
// transitions are checked.
func TestSLAIsolationAndBadInput(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "sla-iso-a")
	b := newFixture(t, "sla-iso-b")
	wf, _ := deployWorkflow(t, a, "slow", delayWorkflow("1s"))
	pol := str(a.owner.ok(mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf,
		"objectives": map[string]any{"maxDuration": map[string]any{"duration": "100ms", "severity": "WARNING"}}}}), "createSLAPolicy.id")
	// The manifest's tenant default and the workflow's: effective per objective.
	eff := a.owner.ok(qSLAEffective, map[string]any{"w": wf, "e": a.envID})
	if str(eff, "effectiveSLA.objectives.maxDuration.duration") != "100ms" || str(eff, "effectiveSLA.objectives.maxDuration.severity") != "WARNING" {
		t.Errorf("effective %v", eff)
	}
	// incidentUpdated streams the tenant's incidents as they change.
	w := connectWS(t, server(1), wsBearer(token(t, a.tenantID, "viewer")))
	w.subscribe("inc", `subscription { incidentUpdated { id status objective count } }`, nil)
	runID := str(a.owner.ok(mStartRun, map[string]any{"w": wf, "e": a.envID, "i": map[string]any{}}), "startRun.id")
	waitRun(t, a.owner, runID, 30*time.Second, "succeeded")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	frame, err := w.next(ctx, "inc")
	if err != nil || frame.Type != "next" || str(frame.Data, "incidentUpdated.status") != "TRIGGERED" || str(frame.Data, "incidentUpdated.objective") != "maxDuration" {
		t.Fatalf("incidentUpdated: %v %+v", err, frame)
	}
	var incID string
	eventually(t, 20*time.Second, func() (bool, string) {
		list := incidentsOf(t, a.owner, nil)
		if len(list) > 0 {
			incID = str(list[0], "id")
		}
		return incID != "", "no incident for a run past its deadline"
	})
	// Tenant b sees nothing and can change nothing.
	if get(b.owner.ok(qIncident, map[string]any{"id": incID}), "node") != nil {
		t.Error("another tenant reads the incident")
	}
	if get(b.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": pol}), "node") != nil {
		t.Error("another tenant reads the policy")
	}
	if got := edges(b.owner.ok(qSLAPolicies, nil), "slaPolicies"); len(got) != 1 || got[0]["scope"] != "TENANT" {
		t.Errorf("tenant b's policies %v, want only its own default", got)
	}
	if len(incidentsOf(t, b.owner, nil)) != 0 {
		t.Error("another tenant lists the incident")
	}
	b.owner.fail("NOT_FOUND", mIncAck, map[string]any{"id": incID})
	b.owner.fail("NOT_FOUND", mIncRes, map[string]any{"id": incID})
	b.owner.fail("NOT_FOUND", mSLADelete, map[string]any{"id": pol})
	r := b.owner.fail("VALIDATION", mSLACreate, map[string]any{"in": map[string]any{"workflowID": wf,
		"objectives": map[string]any{"maxDuration": map[string]any{"duration": "1s", "severity": "ERROR"}}}})
	if !hasProblemAt(r, "input.workflowID") {
		t.Errorf("foreign workflow: %s", r.Raw)
	}
	// Bad input, tenant a: VALIDATION at the path, nothing written.
	bad := []struct {
		obj  map[string]any
		path string
	}{
		{map[string]any{"maxDuration": map[string]any{"duration": "-5s", "severity": "ERROR"}}, "input.objectives.maxDuration.duration"},
		{map[string]any{"maxQueueDelay": map[string]any{"duration": "0s", "severity": "ERROR"}}, "input.objectives.maxQueueDelay.duration"},
		{map[string]any{"minSuccessRate": map[string]any{"rate": 1.2, "window": "1h", "minRuns": 5, "severity": "ERROR"}}, "input.objectives.minSuccessRate.rate"},
		{map[string]any{"completeBy": map[string]any{"cron": "not cron", "severity": "ERROR"}}, "input.objectives.completeBy.cron"},
		{map[string]any{"completeBy": map[string]any{"cron": "0 10 * * 1-5", "timeZone": "Nowhere/City", "severity": "ERROR"}}, "input.objectives.completeBy.timeZone"},
		{map[string]any{"maxDuration": map[string]any{"duration": "1h", "severity": "ERROR", "escalationPolicyID": "esc_unknown"}}, "input.objectives.maxDuration.escalationPolicyID"},
	}
	for _, tc := range bad {
		r := a.owner.fail("VALIDATION", mSLACreate, map[string]any{"in": map[string]any{"environmentID": a.envID, "objectives": tc.obj}})
		if !hasProblemAt(r, tc.path) {
			t.Errorf("%v: %s, want a problem at %s", tc.obj, r.Raw, tc.path)
		}
	}
	if got := edges(a.owner.ok(qSLAPolicies, nil), "slaPolicies"); len(got) != 2 {
		t.Errorf("policies after bad input: %v", got)
	}
	// Roles and transitions.
	viewerTok := newClient(t, 0, token(t, a.tenantID, "viewer"))
	viewerTok.fail("FORBIDDEN", mIncAck, map[string]any{"id": incID})
	viewerTok.fail("FORBIDDEN", mSLACreate, map[string]any{"in": map[string]any{"objectives": map[string]any{}}})
	op := newClient(t, 0, token(t, a.tenantID, "operator"))
	got := op.ok(mIncAck, map[string]any{"id": incID, "n": "on it"})
	if str(got, "acknowledgeIncident.status") != "ACKNOWLEDGED" || str(got, "acknowledgeIncident.note") != "on it" {
		t.Errorf("acknowledge: %v", got)
	}
	op.fail("CONFLICT", mIncAck, map[string]any{"id": incID})
	if frame, err := w.next(ctx, "inc"); err != nil || str(frame.Data, "incidentUpdated.status") != "ACKNOWLEDGED" || str(frame.Data, "incidentUpdated.id") != incID {
		t.Errorf("incidentUpdated after the acknowledgement: %v %+v", err, frame)
	}
	if str(op.ok(mIncRes, map[string]any{"id": incID}), "resolveIncident.status") != "RESOLVED" {
		t.Error("resolve")
	}
	op.fail("CONFLICT", mIncRes, map[string]any{"id": incID})
	// Policy changes: update, delete, each audited with the transitions.
	up := a.owner.ok(mSLAUpdate, map[string]any{"in": map[string]any{"id": pol,
		"objectives": map[string]any{"maxDuration": map[string]any{"duration": "1h", "severity": "INFO"}}}})
	if str(up, "updateSLAPolicy.objectives.maxDuration.duration") != "1h" {
		t.Errorf("update: %v", up)
	}
	if str(a.owner.ok(mSLADelete, map[string]any{"id": pol}), "deleteSLAPolicy") != pol {
		t.Error("delete")
	}
	a.owner.fail("NOT_FOUND", mSLADelete, map[string]any{"id": pol})
	for _, action := range []string{"sla_policy.create", "sla_policy.update", "sla_policy.delete", "incident.open", "incident.acknowledge", "incident.resolve"} {
		logs := edges(a.owner.ok(qHookAudit, map[string]any{"a": action}), "auditLogs")
		if len(logs) != 1 {
			t.Errorf("%d audit entries %s, want 1", len(logs), action)
		}
	}
}
