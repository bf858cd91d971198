package e2e

import (
	"testing"
	"time"
)

// TestEnvironmentScopedKeyOnRound2Objects: an API key scoped to the
// development environment cannot reach what this round added in the
// production environment: it cannot pause a production workflow, skip a
// production run's step, put a rate limit on a production credential or
// see one, or manage members (tenant-wide), and nothing is written.
func TestEnvironmentScopedKeyOnRound2Objects(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envscope2")
	f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "prod-crm", "t": "bearer", "s": map[string]any{"token": "t-" + randHex(8)}})
	limit := str(f.owner.ok(`mutation($e: ID!) { createRateLimit(input: {scope: CREDENTIAL, environmentID: $e, credentialName: "prod-crm", rate: 5, period: "1s"}) { id } }`,
		map[string]any{"e": f.prodEnvID}), "createRateLimit.id")
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "scoped-approval", "s": "scoped-approval"}), "createWorkflow.id")
	v := newVersion(t, f.owner, wf, map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}}}})
	f.owner.ok(mDeploy, map[string]any{"v": v, "e": f.prodEnvID})
	run := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.prodEnvID, "i": map[string]any{}}), "startRun.id")
	waitRun(t, f.owner, run, 30*time.Second, "waiting")

	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-only", roles: [ADMIN, OPERATOR, EDITOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	refused := refusedTo(t, scoped)
	refused("pauseWorkflow", `mutation($w: ID!, $e: ID!) { pauseWorkflow(input: {workflowID: $w, environmentID: $e, mode: REJECT}) { mode } }`,
		map[string]any{"w": wf, "e": f.prodEnvID})
	refused("skipStep", `mutation($r: ID!) { skipStep(runID: $r, stepID: "review", output: {approved: true}, reason: "scoped") { id } }`, map[string]any{"r": run})
	refused("createRateLimit", `mutation($e: ID!) { createRateLimit(input: {scope: CREDENTIAL, environmentID: $e, credentialName: "prod-crm", rate: 1, period: "1s"}) { id } }`,
		map[string]any{"e": f.prodEnvID})
	refused("deleteRateLimit", `mutation($id: ID!) { deleteRateLimit(id: $id) }`, map[string]any{"id": limit})
	refused("addMember", `mutation { addMember(subject: "x@example.com", roles: ["viewer"]) { id } }`, nil)
	if n := get(scoped.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": limit}), "node"); n != nil {
		t.Errorf("scoped key reads a production rate limit: %v", n)
	}

	// Nothing was written.
	if st := str(get(f.owner.ok(qRun, map[string]any{"id": run}), "node"), "status"); st != "waiting" {
		t.Errorf("production run after the scoped key's skipStep: %s", st)
	}
	if p := get(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { pauses { mode } } } }`, map[string]any{"id": wf}), "node.pauses"); len(p.([]any)) != 0 {
		t.Errorf("pauses after the scoped key's pauseWorkflow: %v", p)
	}
	if n := get(f.owner.ok(`{ rateLimits { totalCount } }`, nil), "rateLimits.totalCount"); n != float64(1) {
		t.Errorf("rate limits after the scoped key's mutations: %v", n)
	}
	if n := get(f.owner.ok(`{ members { totalCount } }`, nil), "members.totalCount"); n != float64(0) {
		t.Errorf("members after the scoped key's addMember: %v", n)
	}
}

// TestEnvironmentScopedKeyOnConcurrencyLimits: a key scoped to the
// development environment cannot set or delete a named limit (they are
// tenant-wide), nor set or read a workflow's concurrency in production; a
// set in its own environment works. Nothing is written by the refusals.
func TestEnvironmentScopedKeyOnConcurrencyLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envscope-limits")
	f.owner.ok(`mutation { setConcurrencyLimit(input: {name: "crm-api", limit: 3}) { name } }`, nil)
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-only", roles: [ADMIN, EDITOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	refused := refusedTo(t, scoped)
	const setWC = `mutation($w: ID!, $e: ID!) { setWorkflowConcurrency(input: {workflowID: $w, environmentID: $e, concurrency: {limit: 1}}) { source } }`
	refused("setConcurrencyLimit", `mutation { setConcurrencyLimit(input: {name: "crm-api", limit: 50}) { name } }`, nil)
	refused("deleteConcurrencyLimit", `mutation { deleteConcurrencyLimit(name: "crm-api") }`, nil)
	refused("setWorkflowConcurrency", setWC, map[string]any{"w": f.workflowID, "e": f.prodEnvID})
	refused("workflowConcurrency", `query($w: ID!, $e: ID!) { workflowConcurrency(workflowID: $w, environmentID: $e) { source } }`,
		map[string]any{"w": f.workflowID, "e": f.prodEnvID})
	// In its own environment the key may set it.
	if src := str(scoped.ok(setWC, map[string]any{"w": f.workflowID, "e": f.envID}), "setWorkflowConcurrency.source"); src != "ENVIRONMENT" {
		t.Errorf("set in the key's own environment: source %q", src)
	}

	// Nothing was written by the refusals.
	list, _ := get(f.owner.ok(`{ concurrencyLimits { name limit } }`, nil), "concurrencyLimits").([]any)
	if len(list) != 1 || get(list[0], "limit") != float64(3) {
		t.Errorf("limits after the scoped key's mutations: %v", list)
	}
	prod := f.owner.ok(`query($w: ID!, $e: ID!) { workflowConcurrency(workflowID: $w, environmentID: $e) { source override { limit } } }`,
		map[string]any{"w": f.workflowID, "e": f.prodEnvID})
	if o := get(prod, "workflowConcurrency.override"); o != nil {
		t.Errorf("production override after the scoped key's set: %v", o)
	}
}

// refusedTo returns a check that c, a client with a key scoped to another
// environment, is refused query (FORBIDDEN or NOT_FOUND); what names it in
// the failure.
func refusedTo(t *testing.T, c *client) func(what, query string, vars map[string]any) {
	return func(what, query string, vars map[string]any) {
		t.Helper()
		r := c.do(query, vars)
		if code := r.Code(); code != "FORBIDDEN" && code != "NOT_FOUND" {
			t.Errorf("%s with a key of another environment: %s", what, r.Raw)
		}
	}
}
