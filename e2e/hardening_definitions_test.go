package e2e

import (
	"testing"
)

// TestDefinitionBounds submits definitions that the format used to accept
// but that cannot run sensibly: unbounded retry schedules, request headers
// that would split a request (CR, LF, NUL, names that are not tokens) and
// approvals no one may decide. Each is refused with VALIDATION and its JSON
// path, at createWorkflowVersion and at updateWorkflowVersion, and nothing
// is written.
func TestDefinitionBounds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "def-bounds")
	c := newClient(t, 1, f.owner.token)
	wfID := str(c.ok(mCreateWF, map[string]any{"n": "Bounds", "s": "bounds"}), "createWorkflow.id")
	audits, _ := credAudit(c)

	http := func(extra string) string {
		return defSteps(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example/"}` + extra + `}`)
	}
	httpHeaders := func(headers string) string {
		return defSteps(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example/","headers":` + headers + `}}`)
	}
	approval := func(approvers string) string {
		return defSteps(`{"id":"a","type":"approval","approvers":` + approvers + `}`)
	}
	tests := []struct {
		name, doc, path string
	}{
		// The run scheduled for 2278: maxInterval of 2,000,000 hours.
		{"maxInterval of centuries", http(`,"retry":{"maxAttempts":3,"maxInterval":"2000000h","initialInterval":"1000000h"}`), "$.steps[0].retry.maxInterval"},
		{"maxInterval over 24h", http(`,"retry":{"maxInterval":"25h"}`), "$.steps[0].retry.maxInterval"},
		{"initialInterval over 24h", http(`,"retry":{"initialInterval":"25h","maxInterval":"24h"}`), "$.steps[0].retry.initialInterval"},
		{"backoffCoefficient huge", http(`,"retry":{"backoffCoefficient":1e300}`), "$.steps[0].retry.backoffCoefficient"},
		{"retry span over 7 days", http(`,"retry":{"maxAttempts":100,"initialInterval":"24h","maxInterval":"24h"}`), "$.steps[0].retry.maxAttempts"},
		{"maxAttempts over the cap", http(`,"retry":{"maxAttempts":1000}`), "$.steps[0].retry.maxAttempts"},
		{"CRLF in a header value", httpHeaders(`{"X-Note":"a\r\nX-Injected: 1"}`), "$.steps[0].request.headers['X-Note']"},
		{"LF in a header value", httpHeaders(`{"X-Note":"a\nb"}`), "$.steps[0].request.headers['X-Note']"},
		// A NUL byte is refused for every argument before execution, with the
		// argument's path (the definition's own check stays for stored ones).
		{"NUL in a header value", httpHeaders(`{"X-Note":"a\u0000b"}`), "input.definition.steps[0].request.headers.X-Note"},
		{"CRLF in a header name", httpHeaders(`{"X-A\r\nX-B":"1"}`), "$.steps[0].request.headers"},
		{"space in a header name", httpHeaders(`{"X A":"1"}`), "$.steps[0].request.headers"},
		{"colon in a header name", httpHeaders(`{"X-A:":"1"}`), "$.steps[0].request.headers"},
		{"viewer approvers", approval(`{"roles":["viewer"]}`), "$.steps[0].approvers.roles[0]"},
		{"unknown approver role", approval(`{"roles":["operator","finance"]}`), "$.steps[0].approvers.roles[1]"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, i, f.owner.token)
			r := c.fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, tt.doc)})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
			r = c.fail("VALIDATION", mDefUpdate, map[string]any{"id": f.draftID, "d": defJSON(t, tt.doc)})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("update: want path %s, got %s", tt.path, r.Raw)
			}
		})
	}

	// What stays allowed: the documented bounds themselves, and roles that
	// can decide approvals.
	for i, doc := range []string{
		http(`,"retry":{"maxAttempts":7,"initialInterval":"24h","maxInterval":"24h","backoffCoefficient":10}`),
		httpHeaders(`{"X-Trace_Id.v2":"{{ run.id }}","Accept":"application/json; q=0.9, text/plain"}`),
		approval(`{"roles":["operator","editor","admin","owner"]}`),
		approval(`{"subjects":["alice@example.com"]}`),
	} {
		c := newClient(t, i, f.owner.token)
		c.ok(mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, doc)})
	}

	d := c.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"id": wfID})
	if n := get(d, "node.versions.totalCount"); n != float64(4) {
		t.Errorf("want only the 4 valid versions written, got %v", n)
	}
	if n, _ := credAudit(c); n != audits+4 {
		t.Errorf("audit entries: %d new, want 4 (the valid versions)", n-audits)
	}
}
