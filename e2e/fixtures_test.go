package e2e

import "testing"

// fixture is a tenant populated with one object of every type, as seen by
// its owner.
type fixture struct {
	tenantID     string
	owner        *client
	envID        string // development
	prodEnvID    string
	workflowID   string
	versionID    string // published, deployed to development
	draftID      string
	deploymentID string
	credentialID string
	apiKeyID     string
	apiKeyToken  string
	auditLogID   string
	memberID     string
}

// simpleDefinition is a valid two-step definition.
func simpleDefinition() map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}},
		"steps": []any{
			map[string]any{"id": "greet", "type": "transform", "output": map[string]any{"text": "'hello ' + input.name"}},
			map[string]any{"id": "shout", "type": "transform", "needs": []any{"greet"}, "output": "steps.greet.output.text.upperAscii()"},
		},
		"output": "steps.shout.output",
	}
}

const (
	qEnvironments = `{ environments { edges { node { id name kind } } } }`
	mCreateWF     = `mutation($n: String!, $s: String!) { createWorkflow(input: {name: $n, slug: $s}) { id slug } }`
	mCreateVer    = `mutation($w: ID!, $d: Map!) { createWorkflowVersion(input: {workflowID: $w, definition: $d}) { id number status contentHash } }`
	mPublish      = `mutation($id: ID!) { publishWorkflowVersion(id: $id) { id status publishedAt } }`
	mDeploy       = `mutation($v: ID!, $e: ID!) { deployWorkflowVersion(input: {versionID: $v, environmentID: $e}) { id active version { id } } }`
	mCreateCred   = `mutation($e: ID!, $n: String!, $t: CredentialType!, $s: Map!) { createCredential(input: {environmentID: $e, name: $n, type: $t, secret: $s}) { id name type currentVersion fingerprint } }`
	mRotateCred   = `mutation($id: ID!, $s: Map!) { rotateCredential(input: {id: $id, secret: $s}) { id currentVersion fingerprint } }`
	mDeleteCred   = `mutation($id: ID!) { deleteCredential(id: $id) }`
	mCreateKey    = `mutation($n: String!, $r: [Role!]!) { createAPIKey(input: {name: $n, roles: $r}) { token apiKey { id name roles tokenPrefix } } }`
	mRevokeKey    = `mutation($id: ID!) { revokeAPIKey(id: $id) { id revokedAt } }`
)

// newFixture creates a tenant with one object of every type.
func newFixture(t *testing.T, prefix string) *fixture {
	t.Helper()
	return buildFixture(t, newTenant(t, prefix), server(0))
}

// buildFixture fills a fixture for tenant tenantID through the API server api.
func buildFixture(t *testing.T, tenantID string, api *process) *fixture {
	t.Helper()
	f := &fixture{tenantID: tenantID}
	f.owner = clientOf(t, api, token(t, f.tenantID, "owner"))
	for _, e := range edges(f.owner.ok(qEnvironments, nil), "environments") {
		switch e["name"] {
		case "development":
			f.envID = e["id"].(string)
		case "production":
			f.prodEnvID = e["id"].(string)
		}
	}
	if f.envID == "" || f.prodEnvID == "" {
		t.Fatal("default environments missing")
	}
	f.workflowID = str(f.owner.ok(mCreateWF, map[string]any{"n": "Greeter", "s": "greeter"}), "createWorkflow.id")
	f.versionID = str(f.owner.ok(mCreateVer, map[string]any{"w": f.workflowID, "d": simpleDefinition()}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": f.versionID})
	f.draftID = str(f.owner.ok(mCreateVer, map[string]any{"w": f.workflowID, "d": simpleDefinition()}), "createWorkflowVersion.id")
	f.deploymentID = str(f.owner.ok(mDeploy, map[string]any{"v": f.versionID, "e": f.envID}), "deployWorkflowVersion.id")
	f.credentialID = str(f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "crm", "t": "bearer", "s": map[string]any{"token": "fixture-token-" + randHex(8)}}), "createCredential.id")
	key := f.owner.ok(mCreateKey, map[string]any{"n": "ci", "r": []string{"VIEWER"}})
	f.apiKeyID = str(key, "createAPIKey.apiKey.id")
	f.apiKeyToken = str(key, "createAPIKey.token")
	logs := edges(f.owner.ok(`{ auditLogs(first: 1) { edges { node { id } } } }`, nil), "auditLogs")
	if len(logs) == 0 {
		t.Fatal("no audit log entries")
	}
	f.auditLogID = logs[0]["id"].(string)
	return f
}
