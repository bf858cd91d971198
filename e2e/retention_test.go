package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The retention stacks run their purge every 300ms with a day of one hour:
// a tenant's payloadDays 0 purges its finished runs at once, while every
// other tenant of the suite (90 days by default) keeps everything.
var retentionEnv = []string{"SLUICE_RETENTION_DAY=1h", "SLUICE_RETENTION_INTERVAL=300ms"}

const (
	qRetentionRun = `query($id: ID!) { node(id: $id) { ... on Run { id status input output costMicroUSD finishedAt error { class }
		payloadPurged purgedAt purgedBy retentionReason retainedUntil hold { reason heldBy }
		steps { stepID status output } events { type data } } } }`
	qRetentionRuns  = `{ retentionRuns(first: 100) { id startedAt finishedAt payloadRuns payloadBytes runsDeleted batches error } }`
	mSetRetention   = `mutation($in: RetentionPolicyInput!) { setRetentionPolicy(input: $in) { scope targetID payloadDays runDays effective { payloadDays runDays auditDays webhookDeliveryDays } updatedBy } }`
	qRetention      = `query($s: RetentionScope, $t: ID) { retentionPolicy(scope: $s, targetID: $t) { scope targetID payloadDays runDays effective { payloadDays runDays auditDays webhookDeliveryDays } } }`
	qPreview        = `query($p: RetentionPolicyInput!) { previewRetention(policy: $p) { runs bytes runsDeleted auditEntries webhookDeliveries at } }`
	mHoldRun        = `mutation($id: ID!, $r: String!) { holdRun(runID: $id, reason: $r) { id retentionReason hold { reason heldBy } } }`
	mReleaseHold    = `mutation($id: ID!) { releaseHold(runID: $id) { id retentionReason hold { reason } } }`
	qAuditFiltered  = `query($w: AuditLogWhereInput) { auditLogs(first: 100, where: $w) { totalCount edges { node { action actor targetID createdAt } } } }`
	qCostReportDays = `query($from: Time!, $to: Time!) { costReport(from: $from, to: $to, groupBy: [WORKFLOW]) { workflowID calls costMicroUSD } }`
)

func costTotals(t *testing.T, c *client) string {
	t.Helper()
	d := c.ok(qCostReportDays, map[string]any{"from": time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339), "to": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	return fmt.Sprint(get(d, "costReport"))
}

// TestRetentionPurge: payloadDays 0 purges the payloads of a tenant's
// finished runs at the next pass, as the preview said (runs and bytes);
// tombstones keep status, timings and cost, so costReport is unchanged; an
// open run and a held run keep everything; a purged run cannot be replayed
// or resumed; every change is audited and the audit log filters by actor,
// action, target and time.
func TestRetentionPurge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "retention")
	st := newStack(t, 1, retentionEnv...)
	c := f.owner.on(st.server)
	ai := newFakeOpenAI(t, "a private reply")
	ai.PromptTokens, ai.OutputTokens = 1000, 500
	c.ok(mCreateCred, map[string]any{"e": f.envID, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf, _ := deployWorkflow(t, f, "priced", llmDefinition(0))
	var finished []string
	for i := range 4 {
		id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"ticket": fmt.Sprintf("T-%d secret", i)}}), "startRun.id")
		waitRun(t, c, id, 60*time.Second, "succeeded")
		finished = append(finished, id)
	}
	gate, _ := deployWorkflow(t, f, "gate", map[string]any{"schemaVersion": 1,
		"steps": []any{map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": "1h"}}})
	open := str(c.ok(mStartRun, map[string]any{"w": gate, "e": f.envID, "i": map[string]any{"keep": "open input"}}), "startRun.id")
	waitRun(t, c, open, 60*time.Second, "waiting")
	held := finished[0]
	purgedIDs := finished[1:]

	// Bad input: VALIDATION at the path, nothing written.
	r := c.fail("VALIDATION", mSetRetention, map[string]any{"in": map[string]any{"scope": "TENANT", "payloadDays": -1}})
	if p := r.Errors[0].Extensions["path"]; p != "input.payloadDays" {
		t.Errorf("payloadDays -1 path: %v (%s)", p, r.Raw)
	}
	r = c.fail("VALIDATION", mSetRetention, map[string]any{"in": map[string]any{"scope": "WORKFLOW", "targetID": wf, "auditDays": 5}})
	if p := r.Errors[0].Extensions["path"]; p != "input.auditDays" {
		t.Errorf("workflow auditDays path: %v (%s)", p, r.Raw)
	}
	c.fail("VALIDATION", mSetRetention, map[string]any{"in": map[string]any{"scope": "TENANT", "payloadDays": 100, "runDays": 30}})
	c.fail("VALIDATION", mHoldRun, map[string]any{"id": held, "r": "  "})
	if r := c.fail("VALIDATION", `{ retentionRuns(first: 0) { id } }`, nil); r.Errors[0].Extensions["path"] != "first" {
		t.Errorf("retentionRuns(first: 0): %s", r.Raw)
	}
	if r := c.fail("VALIDATION", qPreview, map[string]any{"p": map[string]any{"scope": "TENANT", "runDays": 0}}); r.Errors[0].Extensions["path"] != "policy.runDays" {
		t.Errorf("previewRetention runDays 0: %s", r.Raw)
	}
	if got := get(c.ok(qRetention, nil), "retentionPolicy.payloadDays"); got != nil {
		t.Fatalf("refused input wrote a policy: payloadDays %v", got)
	}
	newClient(t, 0, token(t, f.tenantID, "operator")).on(st.server).fail("FORBIDDEN", mSetRetention, map[string]any{"in": map[string]any{"scope": "TENANT", "payloadDays": 0}})

	hold := c.ok(mHoldRun, map[string]any{"id": held, "r": "legal case 7"})
	if str(hold, "holdRun.retentionReason") != "LEGAL_HOLD" || str(hold, "holdRun.hold.reason") != "legal case 7" {
		t.Fatalf("holdRun: %v", hold)
	}
	before := costTotals(t, c)
	if !strings.Contains(before, "costMicroUSD") || strings.Contains(before, "costMicroUSD:0") {
		t.Fatalf("cost report before: %s (want priced calls)", before)
	}
	policy := map[string]any{"scope": "TENANT", "payloadDays": 0}
	prev := get(c.ok(qPreview, map[string]any{"p": policy}), "previewRetention").(map[string]any)
	if int(prev["runs"].(float64)) != len(purgedIDs) || prev["bytes"].(float64) <= 0 {
		t.Fatalf("preview %v: want %d runs (the held and the open one kept) and some bytes", prev, len(purgedIDs))
	}
	// The preview wrote nothing.
	if got := get(c.ok(qRetention, nil), "retentionPolicy.payloadDays"); got != nil {
		t.Fatalf("preview wrote the policy: %v", got)
	}
	set := c.ok(mSetRetention, map[string]any{"in": policy})
	if get(set, "setRetentionPolicy.effective.payloadDays") != float64(0) || get(set, "setRetentionPolicy.effective.runDays") != float64(90) {
		t.Fatalf("setRetentionPolicy: %v", set)
	}

	// The stack's worker purges within a pass or two.
	var passes []map[string]any
	eventually(t, 60*time.Second, func() (bool, string) {
		list, _ := get(c.ok(qRetentionRuns, nil), "retentionRuns").([]any)
		passes = passes[:0]
		var n float64
		for _, p := range list {
			m := p.(map[string]any)
			passes = append(passes, m)
			n += m["payloadRuns"].(float64)
		}
		return int(n) == len(purgedIDs), fmt.Sprintf("passes %v", list)
	})
	var bytes float64
	for _, p := range passes {
		bytes += p["payloadBytes"].(float64)
		if p["error"] != nil {
			t.Errorf("pass error: %v", p["error"])
		}
	}
	if bytes != prev["bytes"].(float64) {
		t.Errorf("purged %v bytes; the preview said %v", bytes, prev["bytes"])
	}
	for _, id := range purgedIDs {
		run := get(c.ok(qRetentionRun, map[string]any{"id": id}), "node").(map[string]any)
		if run["payloadPurged"] != true || run["purgedAt"] == nil || run["purgedBy"] != "system:retention" || run["retentionReason"] != "PURGED" || run["retainedUntil"] == nil {
			t.Fatalf("purged run %s: %v", id, run)
		}
		if run["status"] != "succeeded" || run["finishedAt"] == nil || run["costMicroUSD"].(float64) <= 0 {
			t.Fatalf("tombstone lost metadata: %v", run)
		}
		if fmt.Sprint(run["input"]) != "map[]" || run["output"] != nil {
			t.Fatalf("payloads left: input %v output %v", run["input"], run["output"])
		}
		for _, s := range run["steps"].([]any) {
			if s.(map[string]any)["output"] != nil {
				t.Fatalf("step output left: %v", s)
			}
		}
		for _, e := range run["events"].([]any) {
			if e.(map[string]any)["data"] != nil {
				t.Fatalf("event data left: %v", e)
			}
		}
		if strings.Contains(fmt.Sprint(run), "secret") || strings.Contains(fmt.Sprint(run), "private reply") {
			t.Fatalf("payload text survives: %v", run)
		}
	}
	for id, reason := range map[string]string{held: "LEGAL_HOLD", open: "OPEN"} {
		run := get(c.ok(qRetentionRun, map[string]any{"id": id}), "node").(map[string]any)
		if run["payloadPurged"] != false || run["retentionReason"] != reason || fmt.Sprint(run["input"]) == "map[]" {
			t.Fatalf("kept run %s: %v", id, run)
		}
	}
	if after := costTotals(t, c); after != before {
		t.Fatalf("cost report changed by the purge:\n before %s\n after  %s", before, after)
	}
	// A purged run can be neither replayed (sandbox or live) nor resumed.
	for _, q := range []string{
		`mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`,
		`mutation($id: ID!) { replayRun(input: {runID: $id}) { id } }`,
	} {
		r := c.fail("CONFLICT", q, map[string]any{"id": purgedIDs[0]})
		if !strings.Contains(r.Raw, "purged by retention at") {
			t.Errorf("replay of a purged run: %s", r.Raw)
		}
	}

	// The hold released, the run goes at a later pass.
	rel := c.ok(mReleaseHold, map[string]any{"id": held})
	if get(rel, "releaseHold.hold") != nil {
		t.Fatalf("releaseHold: %v", rel)
	}
	eventually(t, 60*time.Second, func() (bool, string) {
		run := get(c.ok(qRetentionRun, map[string]any{"id": held}), "node").(map[string]any)
		return run["payloadPurged"] == true, fmt.Sprint(run["retentionReason"])
	})

	// Audit: the policy, the hold and its release, the purge; filtered.
	audit := func(w map[string]any) []map[string]any {
		return edges(c.ok(qAuditFiltered, map[string]any{"w": w}), "auditLogs")
	}
	if got := audit(map[string]any{"action": "run.hold", "targetID": held}); len(got) != 1 || got[0]["actor"] != "user-owner@e2e.test" {
		t.Errorf("run.hold entries: %v", got)
	}
	if got := audit(map[string]any{"action": "run.release_hold", "targetID": held}); len(got) != 1 {
		t.Errorf("run.release_hold entries: %v", got)
	}
	if got := audit(map[string]any{"action": "retention.set_policy", "actor": "user-owner@e2e.test"}); len(got) != 1 {
		t.Errorf("retention.set_policy entries: %v", got)
	}
	if got := audit(map[string]any{"action": "retention.purge", "actor": "system:retention"}); len(got) == 0 {
		t.Errorf("no retention.purge entries")
	}
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if got := audit(map[string]any{"action": "run.hold", "from": future}); len(got) != 0 {
		t.Errorf("from in the future: %v", got)
	}
	if got := audit(map[string]any{"action": "run.hold", "to": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}); len(got) != 0 {
		t.Errorf("to an hour ago: %v", got)
	}
	if got := audit(map[string]any{"action": "run.hold", "from": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "to": future}); len(got) != 1 {
		t.Errorf("from an hour ago to an hour ahead: %v", got)
	}
}

// TestRetentionIsolation: another tenant's runs, environments and
// workflows answer every retention query and mutation exactly as missing
// ones, and its purge record is its own.
func TestRetentionIsolation(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "retention-a")
	b := newFixture(t, "retention-b")
	run := str(a.owner.ok(mStartRun, map[string]any{"w": a.workflowID, "e": a.envID, "i": map[string]any{"name": "x"}}), "startRun.id")
	waitRun(t, a.owner, run, 60*time.Second, "succeeded")
	missingRun, missingEnv, missingWF := "run_01JZZZZZZZZZZZZZZZZZZZZZZZ", "env_01JZZZZZZZZZZZZZZZZZZZZZZZ", "wf_01JZZZZZZZZZZZZZZZZZZZZZZZ"
	same := func(name, q string, theirs, missing map[string]any) {
		t.Helper()
		r1 := b.owner.do(q, theirs)
		r2 := b.owner.do(q, missing)
		answer := func(r *result, id any) string {
			if len(r.Errors) == 0 {
				return "no error: " + r.Raw
			}
			e := r.Errors[0]
			return strings.ReplaceAll(fmt.Sprint(e.Message, e.Extensions["code"], e.Extensions["path"], r.Data), fmt.Sprint(id), "ID")
		}
		m1, m2 := answer(r1, firstString(theirs)), answer(r2, firstString(missing))
		if r1.Code() != "NOT_FOUND" || m1 != m2 {
			t.Errorf("%s: another tenant's id answered\n  %s\nmissing answered\n  %s", name, r1.Raw, r2.Raw)
		}
	}
	same("holdRun", mHoldRun, map[string]any{"id": run, "r": "x"}, map[string]any{"id": missingRun, "r": "x"})
	same("releaseHold", mReleaseHold, map[string]any{"id": run}, map[string]any{"id": missingRun})
	same("setRetentionPolicy env", mSetRetention, map[string]any{"in": map[string]any{"scope": "ENVIRONMENT", "targetID": a.envID, "payloadDays": 1}},
		map[string]any{"in": map[string]any{"scope": "ENVIRONMENT", "targetID": missingEnv, "payloadDays": 1}})
	same("setRetentionPolicy workflow", mSetRetention, map[string]any{"in": map[string]any{"scope": "WORKFLOW", "targetID": a.workflowID, "payloadDays": 1}},
		map[string]any{"in": map[string]any{"scope": "WORKFLOW", "targetID": missingWF, "payloadDays": 1}})
	same("retentionPolicy", qRetention, map[string]any{"s": "WORKFLOW", "t": a.workflowID}, map[string]any{"s": "WORKFLOW", "t": missingWF})
	same("previewRetention", qPreview, map[string]any{"p": map[string]any{"scope": "ENVIRONMENT", "targetID": a.envID, "payloadDays": 0}},
		map[string]any{"p": map[string]any{"scope": "ENVIRONMENT", "targetID": missingEnv, "payloadDays": 0}})
	// Nothing of a's was touched: its run is not held, it has no policy.
	node := get(a.owner.ok(qRetentionRun, map[string]any{"id": run}), "node").(map[string]any)
	if node["hold"] != nil || node["retentionReason"] != "POLICY" {
		t.Fatalf("a's run after b's attempts: %v", node)
	}
	if got := get(a.owner.ok(`{ retentionPolicies { scope targetID } }`, nil), "retentionPolicies").([]any); len(got) != 1 {
		t.Fatalf("a's policies: %v", got)
	}
	// b's preview counts b's runs only (it has none finished).
	if n := get(b.owner.ok(qPreview, map[string]any{"p": map[string]any{"scope": "TENANT", "payloadDays": 0}}), "previewRetention.runs"); n != float64(0) {
		t.Fatalf("b's preview counted %v runs", n)
	}
	// An environment-scoped key is refused before anything is looked at.
	key := a.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "env", roles: [ADMIN], environmentID: $e}) { token } }`, map[string]any{"e": a.envID})
	scoped := newClient(t, 0, str(key, "createAPIKey.token"))
	scoped.fail("FORBIDDEN", mHoldRun, map[string]any{"id": run, "r": "x"})
	scoped.fail("FORBIDDEN", qRetentionRuns, nil)
}

func firstString(m map[string]any) any {
	for _, k := range []string{"id", "t"} {
		if v, ok := m[k]; ok {
			return v
		}
	}
	if in, ok := m["in"].(map[string]any); ok {
		return in["targetID"]
	}
	if in, ok := m["p"].(map[string]any); ok {
		return in["targetID"]
	}
	return ""
}

// TestRetentionPurgeSurvivesWorkerKill: the purge's worker is SIGKILLed
// while it works through small batches and Redis is wiped; a new worker's
// passes finish the job. Every finished run is purged exactly once: the
// passes' counts add up to the runs purged.
func TestRetentionPurgeSurvivesWorkerKill(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "retention-kill")
	runs := 0
	var ids []string
	for range 30 {
		id := str(f.owner.ok(mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "n"}}), "startRun.id")
		ids = append(ids, id)
	}
	for _, id := range ids {
		waitRun(t, f.owner, id, 60*time.Second, "succeeded")
		runs++
	}
	st := newProcessStack(t, 1, append(retentionEnv, "SLUICE_RETENTION_BATCH=1")...)
	c := f.owner.on(st.server)
	c.ok(mSetRetention, map[string]any{"in": map[string]any{"scope": "TENANT", "payloadDays": 0}})
	// Kill the worker once it has purged something but not everything, if
	// the timing allows; either way the next worker must finish.
	eventually(t, 60*time.Second, func() (bool, string) {
		list, _ := get(c.ok(qRetentionRuns, nil), "retentionRuns").([]any)
		return len(list) > 0, "no pass yet"
	})
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	list, _ := get(c.ok(qRetentionRuns, nil), "retentionRuns").([]any)
	t.Logf("worker killed after %v (of %d runs purged: the next worker does the rest)", list, runs)
	rdb := st.redis()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	eventually(t, 60*time.Second, func() (bool, string) {
		list, _ := get(c.ok(qRetentionRuns, nil), "retentionRuns").([]any)
		var n float64
		for _, p := range list {
			n += p.(map[string]any)["payloadRuns"].(float64)
		}
		return int(n) == runs, fmt.Sprintf("passes count %v purged, want %d: %v", n, runs, list)
	})
	for _, id := range ids {
		run := get(c.ok(qRetentionRun, map[string]any{"id": id}), "node").(map[string]any)
		if run["payloadPurged"] != true {
			t.Fatalf("run %s not purged", id)
		}
	}
}
