package e2e

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

const (
	mDefUpdate  = `mutation($id: ID!, $d: Map!) { updateWorkflowVersion(input: {id: $id, definition: $d}) { id number status contentHash definition } }`
	qDefVersion = `query($id: ID!) { node(id: $id) { ... on WorkflowVersion { id number status contentHash definition publishedAt publishedBy } } }`
	qDefHistory = `query($id: ID!) { node(id: $id) { ... on Workflow { versions { totalCount }
		deployments(orderBy: {field: CREATED_AT, direction: ASC}) { totalCount edges { node { id active supersededAt previousVersionID version { id number } environment { id name } } } } } } }`
)

// defJSON decodes a definition written as JSON, so cases read like the
// documents users write.
func defJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatalf("bad test definition: %v\n%s", err, s)
	}
	return m
}

// defSteps wraps step objects into an otherwise valid definition.
func defSteps(steps ...string) string {
	out := `{"schemaVersion":1,"steps":[`
	for i, s := range steps {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out + `]}`
}

// TestDefinitionValidation submits bad definitions; each is refused with the
// JSON path of the problem and nothing is written.
func TestDefinitionValidation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "def-bad")
	c := newClient(t, 1, f.owner.token)
	wfID := str(c.ok(mCreateWF, map[string]any{"n": "Bad defs", "s": "bad-defs"}), "createWorkflow.id")
	audits, _ := credAudit(c)

	const okTransform = `{"id":"a","type":"transform","output":"input"}`
	tests := []struct {
		name, doc, path string
	}{
		{"cycle", defSteps(
			`{"id":"start","type":"transform","output":"1"}`,
			`{"id":"a","type":"transform","needs":["start","c"],"output":"1"}`,
			`{"id":"b","type":"transform","needs":["a"],"output":"1"}`,
			`{"id":"c","type":"transform","needs":["b"],"output":"1"}`), "$.steps[1].needs[1]"},
		{"unknown need", defSteps(okTransform, `{"id":"b","type":"transform","needs":["a","ghost"],"output":"1"}`), "$.steps[1].needs[1]"},
		{"self need", defSteps(`{"id":"a","type":"transform","needs":["a"],"output":"1"}`), "$.steps[0].needs[0]"},
		{"duplicate step id", defSteps(okTransform, `{"id":"b","type":"transform","output":"1"}`, okTransform), "$.steps[2].id"},
		{"bad CEL in if", defSteps(`{"id":"a","type":"transform","if":"input.x ==","output":"1"}`), "$.steps[0].if"},
		{"non-bool if", defSteps(`{"id":"a","type":"transform","if":"'yes'","output":"1"}`), "$.steps[0].if"},
		{"bad CEL in url template", defSteps(`{"id":"a","type":"http","request":{"method":"GET","url":"https://x.example/{{ input.( }}"}}`), "$.steps[0].request.url"},
		{"bad CEL in message template", defSteps(`{"id":"a","type":"llm","model":"m","messages":[{"role":"user","content":"Hi {{ input.name + }}"}]}`), "$.steps[0].messages[0].content"},
		{"unterminated template", defSteps(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example","body":{"text":"{{ input.x"}}}`), "$.steps[0].request.body.text"},
		{"bad CEL in transform output", defSteps(`{"id":"a","type":"transform","output":{"label":"'x' +"}}`), "$.steps[0].output.label"},
		{"bad duration", defSteps(`{"id":"a","type":"transform","output":"1","timeout":"10 seconds"}`), "$.steps[0].timeout"},
		{"timeout too long", defSteps(`{"id":"a","type":"transform","output":"1","timeout":"25h"}`), "$.steps[0].timeout"},
		{"bad retry interval", defSteps(`{"id":"a","type":"http","request":{"method":"GET","url":"https://x.example"},"retry":{"initialInterval":"2m","maxInterval":"30s"}}`), "$.steps[0].retry.initialInterval"},
		{"unknown step type", defSteps(`{"id":"a","type":"webhook"}`), "$.steps[0].type"},
		{"unknown step field", defSteps(`{"id":"a","type":"transform","output":"1","colour":"red"}`), "$.steps[0].colour"},
		{"unknown top-level field", `{"schemaVersion":1,"name":"x","steps":[` + okTransform + `]}`, "$.name"},
		{"field of another step type", defSteps(`{"id":"a","type":"http","request":{"method":"GET","url":"https://x.example"},"model":"gpt"}`), "$.steps[0].model"},
		{"bad input schema", `{"schemaVersion":1,"input":{"type":"objekt"},"steps":[` + okTransform + `]}`, "$.input"},
		{"input schema with external ref", `{"schemaVersion":1,"input":{"$ref":"file:///etc/passwd"},"steps":[` + okTransform + `]}`, "$.input"},
		{"bad expect schema", defSteps(`{"id":"a","type":"http","request":{"method":"GET","url":"https://x.example"},"expect":{"schema":{"required":"subject"}}}`), "$.steps[0].expect.schema"},
		{"http without request", defSteps(`{"id":"a","type":"http"}`), "$.steps[0].request"},
		{"http without url", defSteps(`{"id":"a","type":"http","request":{"method":"GET"}}`), "$.steps[0].request.url"},
		{"llm without model", defSteps(`{"id":"a","type":"llm","messages":[{"role":"user","content":"hi"}]}`), "$.steps[0].model"},
		{"transform without output", defSteps(`{"id":"a","type":"transform"}`), "$.steps[0].output"},
		{"approval without approvers", defSteps(`{"id":"a","type":"approval"}`), "$.steps[0].approvers"},
		{"delay without duration", defSteps(`{"id":"a","type":"delay"}`), "$.steps[0]"},
		{"step without id", defSteps(`{"type":"transform","output":"1"}`), "$.steps[0].id"},
		{"unsupported schemaVersion", `{"schemaVersion":2,"steps":[{"id":"x","type":"teleport"}]}`, "$.schemaVersion"},
		{"missing schemaVersion", `{"steps":[` + okTransform + `]}`, "$.schemaVersion"},
		{"missing steps", `{"schemaVersion":1}`, "$.steps"},
		{"empty steps", `{"schemaVersion":1,"steps":[]}`, "$.steps"},
		{"reference to a non-dependency", defSteps(okTransform, `{"id":"b","type":"transform","output":{"label":"steps.a.output"}}`), "$.steps[1].output.label"},
		{"reference to a dependent", defSteps(
			`{"id":"a","type":"transform","if":"has(steps.b.output)","output":"1"}`,
			`{"id":"b","type":"transform","needs":["a"],"output":"1"}`), "$.steps[0].if"},
		{"reference to an unknown step", `{"schemaVersion":1,"steps":[` + okTransform + `],"output":"steps.ghost.output"}`, "$.output"},
	}
	// A definition holds at most 1,000 steps.
	many := make([]string, 1001)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":"p%d","type":"transform","output":"1"}`, i)
	}
	tests = append(tests, struct{ name, doc, path string }{"more than 1,000 steps", defSteps(many...), "$.steps"})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, i, f.owner.token)
			r := c.fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, tt.doc)})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
			if r.Errors[0].Message == "" {
				t.Error("empty message")
			}
		})
	}

	t.Run("several problems in one answer", func(t *testing.T) {
		r := c.fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, defSteps(
			`{"id":"a","type":"transform","output":"1","extra":true}`,
			`{"id":"b","type":"transform","needs":["zzz"],"output":"1"}`,
			`{"id":"c","type":"transform","if":"input.x ==","output":"1"}`))})
		for _, p := range []string{"$.steps[0].extra", "$.steps[1].needs[0]", "$.steps[2].if"} {
			if !hasProblemAt(r, p) {
				t.Errorf("missing problem at %s: %s", p, r.Raw)
			}
		}
	})

	t.Run("updating a draft with a bad definition", func(t *testing.T) {
		r := c.fail("VALIDATION", mDefUpdate, map[string]any{"id": f.draftID, "d": defJSON(t, defSteps(`{"id":"a","type":"webhook"}`))})
		if !hasProblemAt(r, "$.steps[0].type") {
			t.Errorf("want path $.steps[0].type, got %s", r.Raw)
		}
		v := c.ok(qDefVersion, map[string]any{"id": f.draftID})
		if !reflect.DeepEqual(get(v, "node.definition"), defRoundTrip(t, simpleDefinition())) {
			t.Errorf("draft changed by a failed update: %v", get(v, "node.definition"))
		}
	})

	d := c.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"id": wfID})
	if n := get(d, "node.versions.totalCount"); n != float64(0) {
		t.Errorf("rejected definitions created %v versions", n)
	}
	if n, _ := credAudit(c); n != audits {
		t.Errorf("rejected definitions wrote %d audit entries", n-audits)
	}
}

func defRoundTrip(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestVersionLifecycle walks a workflow through drafts, publishing and
// deploys: published versions are frozen, drafts cannot be deployed, deploys
// need their credentials and keep history.
func TestVersionLifecycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "def-life")
	c := newClient(t, 1, f.owner.token)
	wfID := str(c.ok(mCreateWF, map[string]any{"n": "Lifecycle", "s": "lifecycle"}), "createWorkflow.id")

	// A draft can be edited; its content hash follows the definition.
	v1 := c.ok(mCreateVer, map[string]any{"w": wfID, "d": simpleDefinition()})
	v1ID, hash1 := str(v1, "createWorkflowVersion.id"), str(v1, "createWorkflowVersion.contentHash")
	if str(v1, "createWorkflowVersion.status") != "draft" || get(v1, "createWorkflowVersion.number") != float64(1) || len(hash1) != 64 {
		t.Fatalf("new version: %v", v1)
	}
	edited := simpleDefinition()
	edited["output"] = "steps.greet.output"
	up := c.ok(mDefUpdate, map[string]any{"id": v1ID, "d": edited})
	hash2 := str(up, "updateWorkflowVersion.contentHash")
	if hash2 == hash1 || len(hash2) != 64 || str(up, "updateWorkflowVersion.status") != "draft" || get(up, "updateWorkflowVersion.number") != float64(1) {
		t.Fatalf("update draft: hash %s -> %s: %v", hash1, hash2, up)
	}
	if get(up, "updateWorkflowVersion.definition.output") != "steps.greet.output" {
		t.Errorf("updated definition: %v", get(up, "updateWorkflowVersion.definition"))
	}
	// The same definition reformatted hashes the same.
	same := c.ok(mDefUpdate, map[string]any{"id": v1ID, "d": defRoundTrip(t, edited)})
	if str(same, "updateWorkflowVersion.contentHash") != hash2 {
		t.Errorf("unchanged definition got a new hash")
	}

	// A draft cannot be deployed.
	r := c.fail("VALIDATION", mDeploy, map[string]any{"v": v1ID, "e": f.envID})
	if !hasProblemAt(r, "input.versionID") {
		t.Errorf("deploying a draft: want path input.versionID, got %s", r.Raw)
	}

	// Publishing freezes it, and publishing again changes nothing.
	p1 := c.ok(mPublish, map[string]any{"id": v1ID})
	if str(p1, "publishWorkflowVersion.status") != "published" || str(p1, "publishWorkflowVersion.publishedAt") == "" {
		t.Fatalf("publish: %v", p1)
	}
	p2 := newClient(t, 0, c.token).ok(mPublish, map[string]any{"id": v1ID})
	if str(p2, "publishWorkflowVersion.publishedAt") != str(p1, "publishWorkflowVersion.publishedAt") || str(p2, "publishWorkflowVersion.status") != "published" {
		t.Errorf("publishing twice: %v then %v", p1, p2)
	}
	before := c.ok(qDefVersion, map[string]any{"id": v1ID})
	r = c.fail("CONFLICT", mDefUpdate, map[string]any{"id": v1ID, "d": simpleDefinition()})
	if r.Errors[0].Message == "" {
		t.Error("conflict without a message")
	}
	after := newClient(t, 0, c.token).ok(qDefVersion, map[string]any{"id": v1ID})
	if !reflect.DeepEqual(before, after) || str(after, "node.contentHash") != hash2 {
		t.Errorf("published version changed: before %v, after %v", before, after)
	}
	pub := c.ok(`query($id: String!) { auditLogs(where: {action: "workflow_version.publish", targetID: $id}) { totalCount } }`, map[string]any{"id": v1ID})
	if n := get(pub, "auditLogs.totalCount"); n != float64(1) {
		t.Errorf("publish audit entries for v1: %v, want 1", n)
	}
	_, audit := credAudit(c)
	if _, ok := audit["workflow_version.update "+v1ID]; !ok {
		t.Error("draft update not audited")
	}

	// A version naming a credential missing from the target environment
	// cannot be deployed there until the credential exists.
	withCred := defJSON(t, `{"schemaVersion":1,"steps":[
		{"id":"prep","type":"transform","output":"input"},
		{"id":"fetch","type":"http","needs":["prep"],"credential":"crm-api","request":{"method":"GET","url":"https://crm.example.com/x"}},
		{"id":"notify","type":"http","needs":["fetch"],"credential":"chat","request":{"method":"POST","url":"https://chat.example.com/x"}}]}`)
	v2ID := str(c.ok(mCreateVer, map[string]any{"w": wfID, "d": withCred}), "createWorkflowVersion.id")
	c.ok(mPublish, map[string]any{"id": v2ID})
	// "chat" exists in development only under another environment's name.
	c.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "crm-api", "t": "bearer", "s": map[string]any{"token": "x"}})
	c.ok(mCreateCred, map[string]any{"e": f.envID, "n": "chat", "t": "bearer", "s": map[string]any{"token": "x"}})
	deploysBefore := get(c.ok(qDefHistory, map[string]any{"id": wfID}), "node.deployments.totalCount")
	r = c.fail("VALIDATION", mDeploy, map[string]any{"v": v2ID, "e": f.envID})
	if !hasProblemAt(r, "$.steps[1].credential") || hasProblemAt(r, "$.steps[2].credential") {
		t.Errorf("want path $.steps[1].credential only, got %s", r.Raw)
	}
	if n := get(c.ok(qDefHistory, map[string]any{"id": wfID}), "node.deployments.totalCount"); n != deploysBefore {
		t.Errorf("failed deploy wrote a deployment: %v -> %v", deploysBefore, n)
	}

	// First deploy of v1, then the credential appears and v2 replaces it.
	dep1 := str(c.ok(mDeploy, map[string]any{"v": v1ID, "e": f.envID}), "deployWorkflowVersion.id")
	c.ok(mCreateCred, map[string]any{"e": f.envID, "n": "crm-api", "t": "bearer", "s": map[string]any{"token": "x"}})
	d2 := newClient(t, 0, c.token).ok(mDeploy, map[string]any{"v": v2ID, "e": f.envID})
	dep2 := str(d2, "deployWorkflowVersion.id")
	if dep2 == "" || dep2 == dep1 || get(d2, "deployWorkflowVersion.active") != true || str(d2, "deployWorkflowVersion.version.id") != v2ID {
		t.Fatalf("deploy after creating the credential: %v", d2)
	}
	// Deploying the active version again is a no-op.
	if again := str(c.ok(mDeploy, map[string]any{"v": v2ID, "e": f.envID}), "deployWorkflowVersion.id"); again != dep2 {
		t.Errorf("redeploying the active version made deployment %s, want %s", again, dep2)
	}

	h := c.ok(qDefHistory, map[string]any{"id": wfID})
	deps := edges(h, "node.deployments")
	if len(deps) != 2 {
		t.Fatalf("deployments: %v", deps)
	}
	old, cur := deps[0], deps[1]
	if str(old, "id") != dep1 || get(old, "active") != false || get(old, "supersededAt") == nil || str(old, "version.id") != v1ID {
		t.Errorf("superseded deployment: %v", old)
	}
	if str(cur, "id") != dep2 || get(cur, "active") != true || get(cur, "supersededAt") != nil || str(cur, "previousVersionID") != v1ID {
		t.Errorf("active deployment: %v", cur)
	}

	// Production deploys need an admin and are audited.
	editor := newClient(t, 0, token(t, f.tenantID, "editor"))
	editor.fail("FORBIDDEN", mDeploy, map[string]any{"v": v1ID, "e": f.prodEnvID})
	prod := str(c.ok(mDeploy, map[string]any{"v": v1ID, "e": f.prodEnvID}), "deployWorkflowVersion.id")
	logs := edges(c.ok(`{ auditLogs(where: {action: "workflow_version.deploy"}) { edges { node { action actor targetType targetID requestID metadata } } } }`, nil), "auditLogs")
	var found map[string]any
	for _, l := range logs {
		if str(l, "action") != "workflow_version.deploy" {
			t.Errorf("filtered audit log has action %v", l["action"])
		}
		if str(l, "targetID") == prod {
			found = l
		}
	}
	if found == nil {
		t.Fatalf("production deploy %s not in audit log: %v", prod, logs)
	}
	if get(found, "metadata.environment") != "production" || get(found, "metadata.versionID") != v1ID || str(found, "actor") == "" || str(found, "requestID") == "" {
		t.Errorf("production deploy audit entry: %v", found)
	}
	if len(logs) != 4 { // fixture's deploy, dep1, dep2, prod
		t.Errorf("deploy audit entries: %d, want 4", len(logs))
	}
}
