package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The environment-scope matrix: one tenant has runs in staging (steps,
// attempts, events, an approval, a model call, webhook deliveries with their
// attempts) and in development, and an API key scoped to development with
// the admin role, so that every refusal below is the scope's and not the
// role's. The key must reach nothing of staging by id, list, filter, nested
// field or subscription, every answer about a staging object must read like
// one about an id that never existed, and every tenant-wide administration
// must be refused with nothing written. A positive control shows the same
// key reaches its own environment's objects.

const (
	hsMsg = "tenant-wide administration needs an unscoped credential"

	hsRun = `query($id: ID!) { node(id: $id) { ... on Run { id environmentID
		steps { id stepID output attemptList { id calls { kind model } } calls { kind } }
		events(first: 1000) { id seq type data } } } }`
	hsDeliveries = `query($r: String) { webhookDeliveries(first: 200, where: {runID: $r}) { totalCount edges { node { id runID status payload attemptList { id } } } } }`
)

// hsDefinition asks a model, waits for an approval, then finishes.
func hsDefinition() map[string]any {
	return engDef(nil, "steps.done.output",
		map[string]any{"id": "ask", "type": "llm", "credential": "openai", "model": "gpt-4o-mini", "maxTokens": 50,
			"messages": []any{map[string]any{"role": "user", "content": "Say hi"}}},
		engApproval("review", "1h", "reject", "ask"),
		map[string]any{"id": "done", "type": "transform", "needs": []any{"review"}, "output": "'ok'"})
}

// hsObjects are the objects of one run, as its environment's owner reads them.
type hsObjects struct {
	run, approval, step, attempt, event, modelCall, delivery, webhookAttempt string
}

func (o hsObjects) all() map[string]string {
	return map[string]string{"Run": o.run, "ApprovalRequest": o.approval, "StepRun": o.step, "StepAttempt": o.attempt,
		"RunEvent": o.event, "ModelCall": o.modelCall, "WebhookDelivery": o.delivery, "WebhookAttempt": o.webhookAttempt}
}

// hsCollect waits until run has a pending approval, a model call and a
// delivered webhook with an attempt, and returns their ids.
func hsCollect(t *testing.T, owner *client, run string) hsObjects {
	t.Helper()
	o := hsObjects{run: run, approval: engPendingApproval(t, owner, run)}
	r := get(owner.ok(hsRun, map[string]any{"id": run}), "node")
	for _, s := range get(r, "steps").([]any) {
		if str(s, "stepID") == "ask" {
			o.step = str(s, "id")
			if list, _ := get(s, "attemptList").([]any); len(list) > 0 {
				o.attempt = str(list[0], "id")
			}
		}
	}
	if evs, _ := get(r, "events").([]any); len(evs) > 0 {
		o.event = str(evs[0], "id")
	}
	mc := edges(owner.ok(`query($r: String!) { modelCalls(where: {runID: $r}) { edges { node { id } } } }`, map[string]any{"r": run}), "modelCalls")
	if len(mc) == 1 {
		o.modelCall = str(mc[0], "id")
	}
	eventually(t, hookWait, func() (bool, string) {
		for _, d := range edges(owner.ok(hsDeliveries, map[string]any{"r": run}), "webhookDeliveries") {
			if list, _ := d["attemptList"].([]any); str(d, "status") == "delivered" && len(list) > 0 {
				o.delivery, o.webhookAttempt = str(d, "id"), str(list[0], "id")
			}
		}
		return o.webhookAttempt != "", "no delivered webhook for run " + run
	})
	for typ, id := range o.all() {
		if id == "" {
			t.Fatalf("run %s has no %s: %v", run, typ, r)
		}
	}
	return o
}

// hsShort keeps failure messages readable.
func hsShort(s string) string {
	if len(s) > 400 {
		return s[:400] + "..."
	}
	return s
}

func TestHardeningEnvironmentScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hscope")
	var stagingID string
	for _, e := range edges(f.owner.ok(qEnvironments, nil), "environments") {
		if e["name"] == "staging" {
			stagingID = str(e, "id")
		}
	}
	ai := newFakeOpenAI(t, "hi")
	hooks := newScriptServer(t)
	endpointID, _ := hookEndpoint(t, f.owner, hooks.URL+"/hooks")
	stagingCred := ""
	for _, env := range []string{f.envID, stagingID} {
		id := str(f.owner.ok(mCreateCred, map[string]any{"e": env, "n": "openai", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}}), "createCredential.id")
		if env == stagingID {
			stagingCred = id
		}
	}
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "scoped", "s": "scoped"}), "createWorkflow.id")
	ver := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": hsDefinition()}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": ver})
	for _, env := range []string{f.envID, stagingID} {
		f.owner.ok(mDeploy, map[string]any{"v": ver, "e": env})
	}
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-admin", roles: [ADMIN], environmentID: $e}) { token apiKey { id } } }`, map[string]any{"e": f.envID})
	scopedAll := newClient(t, 1, str(key, "createAPIKey.token"))
	scopedKeyID := str(key, "createAPIKey.apiKey.id")

	stagingRun := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": stagingID, "i": map[string]any{}}), "startRun.id")
	devRun := str(scopedAll.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	stg := hsCollect(t, f.owner, stagingRun)
	dev := hsCollect(t, f.owner, devRun)
	// Tenant-wide objects the key must not change.
	priceID := str(f.owner.ok(`mutation { setModelPrice(input: {provider: "openai", model: "hs-model", inputUSDPerMTok: 1, outputUSDPerMTok: 2}) { id } }`, nil), "setModelPrice.id")

	// mentionsStaging fails when raw names any staging object.
	mentionsStaging := func(t *testing.T, what, raw string) {
		t.Helper()
		ids := []string{stagingID, stagingCred}
		for _, id := range stg.all() {
			ids = append(ids, id)
		}
		for _, id := range ids {
			if strings.Contains(raw, id) {
				t.Errorf("%s shows staging's %s: %s", what, id, hsShort(raw))
			}
		}
	}
	// as gives each subtest its own clients (a failure stops that subtest).
	as := func(t *testing.T) (owner, scoped *client) {
		return &client{t: t, url: f.owner.url, token: f.owner.token}, &client{t: t, url: scopedAll.url, token: scopedAll.token}
	}

	t.Run("own environment", func(t *testing.T) {
		_, scoped := as(t)
		for typ, id := range dev.all() {
			if got := str(scoped.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id}), "node.id"); got != id {
				t.Errorf("scoped key cannot read its own environment's %s %s", typ, id)
			}
		}
		r := scoped.do(hsRun, map[string]any{"id": devRun})
		if len(r.Errors) > 0 || !strings.Contains(r.Raw, dev.attempt) || !strings.Contains(r.Raw, dev.event) {
			t.Errorf("own run's steps and events: %s", r.Raw)
		}
		if d := edges(scoped.ok(hsDeliveries, map[string]any{"r": devRun}), "webhookDeliveries"); len(d) == 0 {
			t.Error("scoped key sees no delivery of its own run")
		}
	})

	t.Run("node", func(t *testing.T) {
		_, scoped := as(t)
		ids := []string{stagingID, stagingCred}
		for typ, id := range stg.all() {
			ids = append(ids, id)
			r := isoSame(t, scoped, `query($id: ID!) { node(id: $id) { id __typename } }`, id)
			if len(r.Errors) > 0 || get(r.Data, "node") != nil {
				t.Errorf("scoped key reads staging's %s: %s", typ, r.Raw)
			}
		}
		ids = append(ids, f.auditLogID)
		r := scoped.do(`query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": ids})
		if len(r.Errors) > 0 {
			t.Fatalf("nodes: %s", r.Raw)
		}
		for i, n := range get(r.Data, "nodes").([]any) {
			if n != nil {
				t.Errorf("nodes reads %s: %v", ids[i], n)
			}
		}
	})

	t.Run("lists", func(t *testing.T) {
		owner, scoped := as(t)
		lists := map[string]string{
			"runs":              `{ runs(first: 100) { edges { node { id environmentID } } } }`,
			"approvals":         `{ approvals(first: 100) { edges { node { id runID context run { id } } } } }`,
			"modelCalls":        `{ modelCalls(first: 100) { edges { node { id runID environmentID } } } }`,
			"webhookDeliveries": `{ webhookDeliveries(first: 200) { edges { node { id runID payload attemptList { id } } } } }`,
			"endpoint deliveries": `{ webhookEndpoints(first: 10) { edges { node { id
				deliveries(first: 200) { totalCount edges { node { id runID payload attemptList { id } } } } } } } }`,
			"deadLetter": `{ deadLetter { runs { id } } }`,
			"workflow deployments": `{ workflows(first: 100) { edges { node { id
				deployments(first: 100) { edges { node { id environmentID } } } } } } }`,
			"environments": `{ environments { edges { node { id credentials { edges { node { id } } } } } } }`,
		}
		for name, q := range lists {
			r := scoped.do(q, nil)
			if len(r.Errors) > 0 {
				t.Errorf("%s: %s", name, r.Raw)
				continue
			}
			mentionsStaging(t, name, r.Raw)
		}
		// Filters that name a staging object find nothing.
		for name, q := range map[string]string{
			"approvals":         `query($r: ID!) { approvals(where: {runID: $r}) { totalCount } }`,
			"webhookDeliveries": `query($r: String!) { webhookDeliveries(where: {runID: $r}) { totalCount } }`,
			"modelCalls":        `query($r: String!) { modelCalls(where: {runID: $r}) { totalCount } }`,
		} {
			if n := get(scoped.ok(q, map[string]any{"r": stagingRun}), name+".totalCount"); n != float64(0) {
				t.Errorf("%s filtered to the staging run: %v", name, n)
			}
		}
		// The same lists show the key's own run (so they are not just empty).
		r := scoped.do(`{ approvals(first: 100) { edges { node { id } } } webhookDeliveries(first: 200) { edges { node { id } } }
			modelCalls(first: 100) { edges { node { id } } } }`, nil)
		for _, id := range []string{dev.approval, dev.delivery, dev.modelCall} {
			if !strings.Contains(r.Raw, id) {
				t.Errorf("lists lack the key's own %s: %s", id, r.Raw)
			}
		}
		// Counts count only what the key sees.
		r = scoped.do(`{ approvals { totalCount } webhookDeliveries { totalCount } modelCalls { totalCount }
			webhookEndpoints { edges { node { deliveries { totalCount } } } } }`, nil)
		owned := hsShort(owner.do(hsDeliveries, map[string]any{"r": devRun}).Raw)
		nDev := len(edges(owner.ok(hsDeliveries, map[string]any{"r": devRun}), "webhookDeliveries"))
		if get(r.Data, "approvals.totalCount") != float64(1) || get(r.Data, "modelCalls.totalCount") != float64(1) ||
			get(r.Data, "webhookDeliveries.totalCount") != float64(nDev) || !strings.Contains(r.Raw, fmt.Sprintf(`"deliveries":{"totalCount":%d}`, nDev)) {
			t.Errorf("counts seen by the scoped key: %s (its run's deliveries: %s)", r.Raw, owned)
		}
		// The audit log is tenant-wide: refused, and its entries unreadable.
		scoped.fail("FORBIDDEN", `{ auditLogs(first: 10) { edges { node { id } } } }`, nil)
	})

	t.Run("costReport", func(t *testing.T) {
		owner, scoped := as(t)
		from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
		to := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
		q := `query($f: Time!, $t: Time!) { costReport(from: $f, to: $t, groupBy: [ENVIRONMENT]) { environmentID calls } }`
		all, _ := owner.ok(q, map[string]any{"f": from, "t": to})["costReport"].([]any)
		if len(all) != 2 {
			t.Fatalf("owner's report: %v", all)
		}
		rows, _ := scoped.ok(q, map[string]any{"f": from, "t": to})["costReport"].([]any)
		if len(rows) != 1 || str(rows[0], "environmentID") != f.envID || get(rows[0], "calls") != float64(1) {
			t.Errorf("scoped key's report: %v", rows)
		}
		rows, _ = scoped.ok(`query($f: Time!, $t: Time!) { costReport(from: $f, to: $t, groupBy: []) { calls } }`, map[string]any{"f": from, "t": to})["costReport"].([]any)
		if len(rows) != 1 || get(rows[0], "calls") != float64(1) {
			t.Errorf("scoped key's total: %v", rows)
		}
	})

	t.Run("environment mutations", func(t *testing.T) {
		owner, scoped := as(t)
		for _, m := range []struct{ name, query, id string }{
			{"cancelRun", mEngCancel, stagingRun},
			{"resumeRun", mEngResume, stagingRun},
			{"replayRun", `mutation($id: ID!) { replayRun(input: {runID: $id}) { id } }`, stagingRun},
			{"replayRun sandbox", `mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`, stagingRun},
			{"decideApproval", `mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id } }`, stg.approval},
			{"decideApproval reject", `mutation($id: ID!) { decideApproval(input: {id: $id, decision: REJECT, comment: "no"}) { id } }`, stg.approval},
			{"startRun", `mutation($id: ID!) { startRun(input: {workflowID: "` + wf + `", environmentID: $id}) { id } }`, stagingID},
			{"deployWorkflowVersion", `mutation($id: ID!) { deployWorkflowVersion(input: {versionID: "` + ver + `", environmentID: $id}) { id } }`, stagingID},
			{"createCredential", `mutation($id: ID!) { createCredential(input: {environmentID: $id, name: "stolen", type: bearer, secret: {token: "x"}}) { id } }`, stagingID},
			{"rotateCredential", `mutation($id: ID!) { rotateCredential(input: {id: $id, secret: {token: "x"}}) { id } }`, stagingCred},
			{"deleteCredential", mDeleteCred, stagingCred},
		} {
			if r := isoSame(t, scoped, m.query, m.id); r.Code() != "NOT_FOUND" {
				t.Errorf("%s on staging's %s: %s", m.name, m.id, r.Raw)
			}
		}
		run := get(owner.ok(qEngRun, map[string]any{"id": stagingRun}), "node")
		if str(run, "status") != "waiting" {
			t.Errorf("staging run changed: %v", run)
		}
		if n := get(owner.ok(`query($w: ID!) { runs(where: {workflowID: $w}) { totalCount } }`, map[string]any{"w": wf}), "runs.totalCount"); n != float64(2) {
			t.Errorf("refused mutations started runs: %v runs", n)
		}
		if a := get(owner.ok(qEngApproval, map[string]any{"id": stg.approval}), "node.status"); a != "pending" {
			t.Errorf("staging approval decided: %v", a)
		}
		// Idempotency keys are unique in the tenant: a staging run's key
		// answers CONFLICT to the scoped key and never hands out that run.
		k := "hs-" + randHex(4)
		keyed := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": stagingID, "i": map[string]any{}, "k": k}), "startRun.id")
		r := scoped.do(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}, "k": k})
		if r.Code() != "CONFLICT" || strings.Contains(r.Raw, keyed) {
			t.Errorf("startRun with staging's idempotency key: %s", hsShort(r.Raw))
		}
		owner.ok(mEngCancel, map[string]any{"id": keyed})
	})

	t.Run("tenant-wide mutations", func(t *testing.T) {
		owner, scoped := as(t)
		qAudit := `{ auditLogs(first: 1) { totalCount } }`
		auditBefore := get(owner.ok(qAudit, nil), "auditLogs.totalCount")
		const qBudget = `{ viewer { tenant { monthlyBudgetMicroUSD } } }`
		budgetBefore := get(owner.ok(qBudget, nil), "viewer.tenant.monthlyBudgetMicroUSD")
		for _, m := range []struct {
			name, query string
			vars        map[string]any
		}{
			{"createWebhookEndpoint", mHookCreate, map[string]any{"u": hooks.URL + "/stolen"}},
			{"updateWebhookEndpoint", mHookUpdate, map[string]any{"in": map[string]any{"id": endpointID, "enabled": false, "url": hooks.URL + "/stolen"}}},
			{"rotateWebhookSecret", mHookRotate, map[string]any{"id": endpointID}},
			{"deleteWebhookEndpoint", mHookDelete, map[string]any{"id": endpointID}},
			{"redeliverWebhookDelivery", mHookRedeliver, map[string]any{"id": dev.delivery}},
			{"createEnvironment", `mutation { createEnvironment(input: {name: "sneaky", kind: production}) { id } }`, nil},
			{"setTenantBudget", `mutation { setTenantBudget(input: {monthlyUSD: 1}) { id } }`, nil},
			{"setModelPrice", `mutation { setModelPrice(input: {provider: "openai", model: "hs-model", inputUSDPerMTok: 0, outputUSDPerMTok: 0}) { id } }`, nil},
			{"deleteModelPrice", `mutation($id: ID!) { deleteModelPrice(id: $id) }`, map[string]any{"id": priceID}},
			{"createAPIKey", mCreateKey, map[string]any{"n": "escape", "r": []string{"OWNER"}}},
			{"createAPIKey in its environment", `mutation($e: ID!) { createAPIKey(input: {name: "more", roles: [ADMIN], environmentID: $e}) { token } }`, map[string]any{"e": f.envID}},
			{"revokeAPIKey", mRevokeKey, map[string]any{"id": f.apiKeyID}},
			{"revokeAPIKey of itself", mRevokeKey, map[string]any{"id": scopedKeyID}},
		} {
			r := scoped.do(m.query, m.vars)
			if r.Code() != "FORBIDDEN" || !strings.Contains(r.Errors[0].Message, hsMsg) {
				t.Errorf("%s by a scoped key: want FORBIDDEN saying %q, got %s", m.name, hsMsg, hsShort(r.Raw))
			}
		}
		// Nothing was written.
		eps := edges(owner.ok(qHookEndpoints, nil), "webhookEndpoints")
		if len(eps) != 1 || eps[0]["enabled"] != true || eps[0]["url"] != hooks.URL+"/hooks" || eps[0]["previousSecretExpiresAt"] != nil {
			t.Errorf("endpoints changed: %v", eps)
		}
		if envs := edges(owner.ok(qEnvironments, nil), "environments"); len(envs) != 3 {
			t.Errorf("environments: %v", envs)
		}
		if b := get(owner.ok(qBudget, nil), "viewer.tenant.monthlyBudgetMicroUSD"); b != budgetBefore {
			t.Errorf("budget %v -> %v", budgetBefore, b)
		}
		prices := edges(owner.ok(`{ modelPrices { edges { node { id inputMicroUSDPerMTok } } } }`, nil), "modelPrices")
		if len(prices) != 1 || prices[0]["id"] != priceID || prices[0]["inputMicroUSDPerMTok"] != float64(1_000_000) {
			t.Errorf("model prices: %v", prices)
		}
		keys := edges(owner.ok(`{ apiKeys { edges { node { id revokedAt } } } }`, nil), "apiKeys")
		if len(keys) != 2 {
			t.Errorf("API keys: %v", keys)
		}
		for _, k := range keys {
			if k["revokedAt"] != nil {
				t.Errorf("key revoked: %v", k)
			}
		}
		d := get(owner.ok(qHookDelivery, map[string]any{"id": dev.delivery}), "node")
		if l, _ := get(d, "attemptList").([]any); str(d, "status") != "delivered" || len(l) != 1 {
			t.Errorf("delivery redelivered: %v", d)
		}
		if after := get(owner.ok(qAudit, nil), "auditLogs.totalCount"); after != auditBefore {
			t.Errorf("audit entries %v -> %v: a refused mutation was recorded as done", auditBefore, after)
		}
	})

	t.Run("subscriptions", func(t *testing.T) {
		owner, scoped := as(t)
		ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
		defer cancel()
		ws := connectWS(t, server(0), wsBearer(scoped.token))
		// runEvents on a staging run ends like one on a run that never existed.
		var frames []string
		for i, id := range []string{stagingRun, isoFakeID(stagingRun)} {
			sub := "ev" + string(rune('0'+i))
			ws.subscribe(sub, sRunEvents, map[string]any{"id": id, "after": 0})
			fr, err := ws.next(ctx, sub)
			if err != nil {
				t.Fatal(err)
			}
			if fr.Type == "next" && len(fr.Errors) == 0 {
				t.Fatalf("runEvents streams staging's run: %s", fr.Raw)
			}
			frames = append(frames, fr.Type+" "+isoNormalise(fr.Raw, id))
		}
		if frames[0] != frames[1] {
			t.Errorf("runEvents on staging's run answers differently from an unknown run:\n%s\n%s", frames[0], frames[1])
		}
		// runUpdated streams only the key's environment: staging's run
		// changes first, then the key's own; the stream shows the second only.
		ws.subscribe("up", `subscription { runUpdated { id environmentID status steps { id } } }`, nil)
		// The subscription is live once a change made after it arrives; a
		// dev run started now is that change.
		marker := str(scoped.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
		var seen []string
		waitFor := func(id string) {
			t.Helper()
			for {
				fr, err := ws.next(ctx, "up")
				if err != nil || fr.Type != "next" || len(fr.Errors) > 0 {
					t.Fatalf("runUpdated: %v %s (seen %v)", err, fr.Raw, seen)
				}
				mentionsStaging(t, "runUpdated", fr.Raw)
				got := str(fr.Data, "runUpdated.id")
				seen = append(seen, got)
				if got == id {
					return
				}
			}
		}
		waitFor(marker)
		owner.ok(mEngCancel, map[string]any{"id": stagingRun})
		scoped.ok(mEngCancel, map[string]any{"id": devRun})
		waitFor(devRun)
		// The key still operates in its own environment: it decides its
		// run's approval and the run finishes.
		apr := engPendingApproval(t, scoped, marker)
		scoped.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE"})
		if r := waitRun(t, scoped, marker, engWait, "succeeded", "failed"); r["status"] != "succeeded" {
			t.Errorf("own run after approval: %v", r)
		}
	})
}
