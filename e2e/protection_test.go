package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The protected environment tests set a protection on production over
// GraphQL and drive deploys, requests, decisions, a freeze window, the
// expiry (expires_at moved back in Postgres, swept every 300ms on a stack
// of their own) and a release through it.

const (
	mProtect = `mutation($in: SetEnvironmentProtectionInput!) { setEnvironmentProtection(input: $in) { id protection {
		requiredApprovals approverRoles approvalTimeout frozenUntil
		evaluation { maxAge minPassRate maxRegressions }
		freezeWindows { name start end days from to timeZone } } } }`
	qProtection  = `query($id: ID!) { node(id: $id) { ... on Environment { protection { requiredApprovals approverRoles } } } }`
	aprFields    = `id kind status runID workflowID versionID environmentID releaseID requestedBy requiredApprovals context expiresAt decidedBy approvals { subject } deployment { id active version { id } } release { id state }`
	mRequestDep  = `mutation($v: ID!, $e: ID!) { requestDeployment(input: {versionID: $v, environmentID: $e}) { deployment { id version { id } } approvalRequest { ` + aprFields + ` } } }`
	mDecideDep   = `mutation($id: ID!, $d: ApprovalDecision!) { decideApproval(input: {id: $id, decision: $d, comment: "ok"}) { ` + aprFields + ` } }`
	qApr         = `query($id: ID!) { node(id: $id) { ... on ApprovalRequest { ` + aprFields + ` } } }`
	qDeployAprs  = `{ approvals(where: {kind: DEPLOYMENT}) { totalCount edges { node { id kind status } } } }`
	qCurrentProd = `query($e: ID!) { node(id: $e) { ... on Environment { deployments(where: {active: true}) { edges { node { version { id } } } } } } }`
)

// TestProtectedEnvironment: production requires one admin approval and a
// passing evaluation. Without an evaluation a deploy is refused naming the
// requirement; with one, requestDeployment waits; the requester cannot
// approve, an admin can and the version becomes current; a freeze window
// refuses; a request expires; a release waits in PENDING_APPROVAL; another
// tenant sees and decides nothing; bad protection input is VALIDATION at
// its path with nothing written.
func TestProtectedEnvironment(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_DEPLOY_APPROVAL_SWEEP_INTERVAL=300ms", "SLUICE_EVAL_INTERVAL=200ms")
	f := newFixture(t, "protect")
	other := newFixture(t, "protect-other")
	owner := f.owner.on(st.server)
	admin := newClient(t, 0, token(t, f.tenantID, "admin")).on(st.server)
	editor := newClient(t, 0, token(t, f.tenantID, "editor")).on(st.server)
	stranger := other.owner.on(st.server)
	prod := f.prodEnvID
	api := newFlakyAPI(t)
	api.failing.Store(false)
	hooks := newScriptServer(t)
	hookEndpoint(t, owner, hooks.URL+"/dep", "deployment.approval_requested", "deployment.approved", "deployment.rejected", "deployment.expired")

	wf := str(owner.ok(mCreateWF, map[string]any{"n": "guarded", "s": "guarded"}), "createWorkflow.id")
	v1 := newVersion(t, owner, wf, callDef(api.URL+"/ok"))
	owner.ok(mDeploy, map[string]any{"v": v1, "e": prod})
	startRuns(t, owner, wf, prod, 2)
	v2 := newVersion(t, owner, wf, callDef(api.URL+"/ok"))

	// Bad input: VALIDATION at the path, nothing written.
	now := time.Now().UTC()
	for _, tc := range []struct {
		in   map[string]any
		path string
	}{
		{map[string]any{"requiredApprovals": -1}, "input.requiredApprovals"},
		{map[string]any{"requiredApprovals": 1, "approverRoles": []any{"admin", "boss"}}, "input.approverRoles[1]"},
		{map[string]any{"freezeWindows": []any{map[string]any{"start": now.Format(time.RFC3339), "end": now.Add(-time.Hour).Format(time.RFC3339)}}}, "input.freezeWindows[0].end"},
		{map[string]any{"freezeWindows": []any{map[string]any{"days": []any{"SAT"}, "from": "10:00", "to": "12:00", "timeZone": "Mars/Olympus"}}}, "input.freezeWindows[0].timeZone"},
		{map[string]any{"evaluation": map[string]any{"minPassRate": 1.5}}, "input.evaluation.minPassRate"},
	} {
		tc.in["environmentID"] = prod
		res := owner.fail("VALIDATION", mProtect, map[string]any{"in": tc.in})
		if !strings.Contains(fmt.Sprint(res.Errors), tc.path) {
			t.Errorf("%v: want path %s, got %v", tc.in, tc.path, res.Errors)
		}
	}
	if p := get(owner.ok(qProtection, map[string]any{"id": prod}), "node.protection"); p != nil {
		t.Fatalf("bad input wrote a protection: %v", p)
	}
	editor.fail("FORBIDDEN", mProtect, map[string]any{"in": map[string]any{"environmentID": prod, "requiredApprovals": 1}})
	stranger.fail("NOT_FOUND", mProtect, map[string]any{"in": map[string]any{"environmentID": prod, "requiredApprovals": 0}})

	set := owner.ok(mProtect, map[string]any{"in": map[string]any{"environmentID": prod, "requiredApprovals": 1,
		"evaluation": map[string]any{"minPassRate": 1, "maxRegressions": 0, "maxAge": "1h"}}})
	if get(set, "setEnvironmentProtection.protection.requiredApprovals") != 1.0 || str(set, "setEnvironmentProtection.protection.approvalTimeout") != "72h0m0s" ||
		fmt.Sprint(get(set, "setEnvironmentProtection.protection.approverRoles")) != "[admin owner]" {
		t.Fatalf("setEnvironmentProtection: %v", set)
	}

	// No evaluation: refused, naming the requirement.
	for _, m := range []string{mRequestDep, mDeploy} {
		res := owner.fail("VALIDATION", m, map[string]any{"v": v2, "e": prod})
		if msg := fmt.Sprint(res.Errors); !strings.Contains(msg, "requires a passing evaluation") || !strings.Contains(msg, "no completed evaluation") || !strings.Contains(msg, "input.versionID") {
			t.Fatalf("deploy without an evaluation: %v", res.Errors)
		}
	}
	ev := str(owner.ok(mEvaluate, map[string]any{"in": map[string]any{"workflowID": wf, "candidateVersionID": v2, "recordedOnly": true}}), "evaluateVersion.id")
	if got := waitEvaluation(t, owner, ev, "COMPLETED", "FAILED", "ABORTED_BUDGET", "CANCELLED"); str(got, "status") != "COMPLETED" {
		t.Fatalf("evaluation: %v", got)
	}
	// Too old, then breaking a limit: refused, saying which.
	db := ownerDB(t)
	for _, tc := range []struct{ sql, want string }{
		{`UPDATE evaluations SET finished_at = now() - interval '2 hours' WHERE id = $1`, "ago, more than 1h0m0s"},
		{`UPDATE evaluations SET finished_at = now(), summary = jsonb_set(summary, '{passRate}', '0.5') WHERE id = $1`, "fails: pass rate 0.5 is below 1"},
	} {
		if _, err := db.Exec(tc.sql, ev); err != nil {
			t.Fatal(err)
		}
		if res := owner.fail("VALIDATION", mRequestDep, map[string]any{"v": v2, "e": prod}); !strings.Contains(fmt.Sprint(res.Errors), tc.want) {
			t.Fatalf("want %q: %v", tc.want, res.Errors)
		}
	}
	if _, err := db.Exec(`UPDATE evaluations SET summary = jsonb_set(summary, '{passRate}', '1') WHERE id = $1`, ev); err != nil {
		t.Fatal(err)
	}

	// A passing evaluation: deployWorkflowVersion keeps its shape and
	// refuses; requestDeployment waits with the evaluation as context.
	if res := owner.fail("CONFLICT", mDeploy, map[string]any{"v": v2, "e": prod}); !strings.Contains(fmt.Sprint(res.Errors), "requestDeployment") {
		t.Fatalf("direct deploy into an environment requiring approvals: %v", res.Errors)
	}
	req := owner.ok(mRequestDep, map[string]any{"v": v2, "e": prod})
	apr, _ := get(req, "requestDeployment.approvalRequest").(map[string]any)
	aprID := str(apr, "id")
	if get(req, "requestDeployment.deployment") != nil || str(apr, "kind") != "DEPLOYMENT" || str(apr, "status") != "pending" ||
		get(apr, "runID") != nil || str(apr, "versionID") != v2 || str(apr, "context.evaluation.id") != ev || get(apr, "context.evaluation.summary.passRate") != 1.0 {
		t.Fatalf("requestDeployment: %v", req)
	}
	if d := edges(owner.ok(qDeployAprs, nil), "approvals"); len(d) != 1 || d[0]["id"] != aprID {
		t.Fatalf("approvals(kind: DEPLOYMENT): %v", d)
	}
	hookWaitMsgs(t, hooks, "/dep", 1, func(m hookMsg) bool {
		return m.Type == "deployment.approval_requested" && str(m.Data, "approvalRequestID") == aprID
	})
	// Another tenant sees and decides nothing.
	if n := get(stranger.ok(qDeployAprs, nil), "approvals.totalCount"); n != 0.0 {
		t.Fatalf("other tenant sees %v deployment requests", n)
	}
	if n := get(stranger.ok(qApr, map[string]any{"id": aprID}), "node"); n != nil {
		t.Fatalf("other tenant's node: %v", n)
	}
	stranger.fail("NOT_FOUND", mDecideDep, map[string]any{"id": aprID, "d": "APPROVE"})
	// The requester's own approval never counts; an editor is no approver.
	if res := owner.fail("FORBIDDEN", mDecideDep, map[string]any{"id": aprID, "d": "APPROVE"}); !strings.Contains(fmt.Sprint(res.Errors), "you requested this deployment") {
		t.Fatalf("requester approving: %v", res.Errors)
	}
	editor.fail("FORBIDDEN", mDecideDep, map[string]any{"id": aprID, "d": "APPROVE"})
	if cur := edges(get(owner.ok(qCurrentProd, map[string]any{"e": prod}), "node").(map[string]any), "deployments"); len(cur) != 1 || str(cur[0], "version.id") != v1 {
		t.Fatalf("production changed before approval: %v", cur)
	}
	// An admin approves: the version becomes current.
	got := get(admin.ok(mDecideDep, map[string]any{"id": aprID, "d": "APPROVE"}), "decideApproval").(map[string]any)
	if str(got, "status") != "approved" || str(got, "deployment.version.id") != v2 || get(got, "deployment.active") != true || str(got, "decidedBy") != "user-admin@e2e.test" {
		t.Fatalf("approved request: %v", got)
	}
	if cur := edges(get(owner.ok(qCurrentProd, map[string]any{"e": prod}), "node").(map[string]any), "deployments"); len(cur) != 1 || str(cur[0], "version.id") != v2 {
		t.Fatalf("production after approval: %v", cur)
	}
	admin.fail("CONFLICT", mDecideDep, map[string]any{"id": aprID, "d": "APPROVE"})
	// Asking for the version active already changes nothing and waits for nothing.
	if d := owner.ok(mRequestDep, map[string]any{"v": v2, "e": prod}); str(d, "requestDeployment.deployment.id") != str(got, "deployment.id") {
		t.Fatalf("requestDeployment of the active version: %v", d)
	}
	hookWaitMsgs(t, hooks, "/dep", 1, func(m hookMsg) bool {
		return m.Type == "deployment.approved" && str(m.Data, "approvalRequestID") == aprID && str(m.Data, "deploymentID") == str(got, "deployment.id")
	})

	// A freeze window refuses, naming the window and its end.
	end := time.Now().UTC().Add(time.Hour).Truncate(time.Second)
	owner.ok(mProtect, map[string]any{"in": map[string]any{"environmentID": prod, "requiredApprovals": 1,
		"freezeWindows": []any{map[string]any{"name": "holiday", "start": time.Now().UTC().Add(-time.Hour).Format(time.RFC3339), "end": end.Format(time.RFC3339)}}}})
	for _, m := range []string{mRequestDep, mDeploy} {
		res := owner.fail("CONFLICT", m, map[string]any{"v": v1, "e": prod})
		if msg := fmt.Sprint(res.Errors); !strings.Contains(msg, `"holiday"`) || !strings.Contains(msg, end.Format(time.RFC3339)) {
			t.Fatalf("deploy in a freeze window: %v", res.Errors)
		}
	}

	// A request expires: its expiry moved back, the sweep settles it.
	owner.ok(mProtect, map[string]any{"in": map[string]any{"environmentID": prod, "requiredApprovals": 1}})
	v3 := newVersion(t, owner, wf, callDef(api.URL+"/ok"))
	exp := str(editor.ok(mRequestDep, map[string]any{"v": v3, "e": prod}), "requestDeployment.approvalRequest.id")
	owner.fail("CONFLICT", mRequestDep, map[string]any{"v": v3, "e": prod}) // one request at a time
	if _, err := ownerDB(t).Exec(`UPDATE approval_requests SET expires_at = now() - interval '1 minute' WHERE id = $1`, exp); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() (bool, string) {
		a := get(owner.ok(qApr, map[string]any{"id": exp}), "node")
		return str(a, "status") == "expired", fmt.Sprintf("request %v", a)
	})
	hookWaitMsgs(t, hooks, "/dep", 1, func(m hookMsg) bool { return m.Type == "deployment.expired" && str(m.Data, "approvalRequestID") == exp })
	admin.fail("CONFLICT", mDecideDep, map[string]any{"id": exp, "d": "APPROVE"})

	// A release waits in PENDING_APPROVAL; an editor may ask for it in
	// production, an admin's approval starts it.
	rel := editor.ok(mCreateRelease, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": prod, "candidateVersionID": v3,
		"steps": []any{map[string]any{"weightPercent": 10, "holdFor": "1h"}, map[string]any{"weightPercent": 100}}}})
	relID := str(rel, "createRelease.id")
	if str(rel, "createRelease.state") != "PENDING_APPROVAL" {
		t.Fatalf("release into a protected environment: %v", rel)
	}
	var relApr string
	for _, e := range edges(owner.ok(qDeployAprs, nil), "approvals") {
		if e["status"] == "pending" {
			relApr = e["id"].(string)
		}
	}
	a := get(owner.ok(qApr, map[string]any{"id": relApr}), "node")
	if str(a, "releaseID") != relID || str(a, "release.state") != "PENDING_APPROVAL" {
		t.Fatalf("release's request: %v", a)
	}
	editor.fail("FORBIDDEN", mDecideDep, map[string]any{"id": relApr, "d": "APPROVE"})
	owner.fail("CONFLICT", `mutation($id: ID!) { promoteRelease(id: $id) { id } }`, map[string]any{"id": relID})
	admin.ok(mDecideDep, map[string]any{"id": relApr, "d": "APPROVE"})
	if s := str(releaseOf(t, owner, relID), "state"); s != "PROGRESSING" {
		t.Fatalf("approved release is %s", s)
	}
	owner.ok(mAbortRelease, map[string]any{"id": relID})
	// Aborting a release that waits cancels its request.
	rel2 := str(owner.ok(mCreateRelease, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": prod, "candidateVersionID": v3,
		"steps": []any{map[string]any{"weightPercent": 100}}}}), "createRelease.id")
	owner.ok(mAbortRelease, map[string]any{"id": rel2})
	cancelled := 0
	for _, e := range edges(owner.ok(`{ approvals(where: {kind: DEPLOYMENT}) { edges { node { id status releaseID } } } }`, nil), "approvals") {
		if e["releaseID"] == rel2 {
			if e["status"] != "cancelled" {
				t.Fatalf("request of an aborted release: %v", e)
			}
			cancelled++
		}
	}
	if cancelled != 1 {
		t.Fatalf("%d cancelled requests for release %s, want 1", cancelled, rel2)
	}

	// A rejection ends a request; nothing is deployed.
	rej := str(editor.ok(mRequestDep, map[string]any{"v": v3, "e": prod}), "requestDeployment.approvalRequest.id")
	if r := get(admin.ok(mDecideDep, map[string]any{"id": rej, "d": "REJECT"}), "decideApproval"); str(r, "status") != "rejected" || get(r, "deployment") != nil {
		t.Fatalf("rejected request: %v", r)
	}
	hookWaitMsgs(t, hooks, "/dep", 1, func(m hookMsg) bool {
		return m.Type == "deployment.rejected" && str(m.Data, "approvalRequestID") == rej
	})
	if cur := edges(get(owner.ok(qCurrentProd, map[string]any{"e": prod}), "node").(map[string]any), "deployments"); len(cur) != 1 || str(cur[0], "version.id") != v2 {
		t.Fatalf("production after rejection: %v", cur)
	}
	// Unprotected environments keep deploying at once through either mutation.
	if d := owner.ok(mRequestDep, map[string]any{"v": v3, "e": f.envID}); str(d, "requestDeployment.deployment.version.id") != v3 || get(d, "requestDeployment.approvalRequest") != nil {
		t.Fatalf("requestDeployment into an unprotected environment: %v", d)
	}
	// Audited.
	logs := owner.ok(`{ auditLogs(first: 100) { edges { node { action } } } }`, nil)
	seen := map[string]bool{}
	for _, e := range edges(logs, "auditLogs") {
		seen[e["action"].(string)] = true
	}
	for _, a := range []string{"environment.protect", "deployment.request", "deployment.approve", "deployment.reject", "deployment.expire", "release.approve"} {
		if !seen[a] {
			t.Errorf("no audit entry %s: %v", a, seen)
		}
	}
}

// TestProtectedRequestExpiryOutlivesWorkerKill: a deployment request's
// expiry lives in Postgres: with the worker SIGKILLed and Redis emptied,
// a new worker expires it, once.
func TestProtectedRequestExpiryOutlivesWorkerKill(t *testing.T) {
	t.Parallel()
	st := newProcessStack(t, 1, "SLUICE_DEPLOY_APPROVAL_SWEEP_INTERVAL=300ms") // its worker is SIGKILLed
	f := newFixture(t, "protect-kill")
	owner := f.owner.on(st.server)
	owner.ok(mProtect, map[string]any{"in": map[string]any{"environmentID": f.envID, "requiredApprovals": 1, "approvalTimeout": "1h"}})
	v2 := newVersion(t, owner, f.workflowID, simpleDefinition())
	id := str(owner.ok(mRequestDep, map[string]any{"v": v2, "e": f.envID}), "requestDeployment.approvalRequest.id")
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	rdb := st.redis()
	defer rdb.Close()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := ownerDB(t).Exec(`UPDATE approval_requests SET expires_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	if a := get(owner.ok(qApr, map[string]any{"id": id}), "node"); str(a, "status") != "pending" {
		t.Fatalf("expired with no worker: %v", a)
	}
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	eventually(t, 30*time.Second, func() (bool, string) {
		a := get(owner.ok(qApr, map[string]any{"id": id}), "node")
		return str(a, "status") == "expired", fmt.Sprintf("request %v", a)
	})
	n := 0
	for _, e := range edges(owner.ok(`{ auditLogs(first: 100) { edges { node { action targetID } } } }`, nil), "auditLogs") {
		if e["action"] == "deployment.expire" && e["targetID"] == id {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d deployment.expire entries for %s, want 1", n, id)
	}
}
