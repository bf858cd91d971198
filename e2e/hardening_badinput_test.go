package e2e

import (
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/ids"
)

// badCase is one request that must be refused with code at path, writing
// nothing.
type badCase struct {
	name  string
	query string
	vars  map[string]any
	code  string
	path  string // exact extensions.path; "" to skip
}

// TestHardeningBadInputCodes: bad input that gqlgen or Postgres used to turn
// into INTERNAL (NUL bytes, which Postgres refuses in text and jsonb; enum
// values in the wrong case; a Time that is not RFC 3339; a Map given a
// string) answers VALIDATION with the field path, and writes nothing.
func TestHardeningBadInputCodes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bad-nul")
	before := badState(f.owner)
	nul := "a\x00b"
	defWith := func(mut func(def map[string]any)) map[string]any {
		d := simpleDefinition()
		mut(d)
		return d
	}
	httpDef := func(headerValue string) map[string]any {
		return map[string]any{
			"schemaVersion": 1,
			"steps": []any{map[string]any{"id": "call", "type": "http",
				"request": map[string]any{"method": "GET", "url": "http://127.0.0.1:1/x", "headers": map[string]any{"X-Test": headerValue}}}},
		}
	}
	const (
		mWF      = `mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { id } }`
		mVer     = `mutation($i: CreateWorkflowVersionInput!) { createWorkflowVersion(input: $i) { id } }`
		mStart   = `mutation($i: StartRunInput!) { startRun(input: $i) { id } }`
		mHook    = `mutation($i: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $i) { secret } }`
		mKey     = `mutation($i: CreateAPIKeyInput!) { createAPIKey(input: $i) { token } }`
		mPrice   = `mutation($i: SetModelPriceInput!) { setModelPrice(input: $i) { id } }`
		mDecide  = `mutation($i: DecideApprovalInput!) { decideApproval(input: $i) { id } }`
		mEnv     = `mutation($i: CreateEnvironmentInput!) { createEnvironment(input: $i) { id } }`
		mCred    = `mutation($i: CreateCredentialInput!) { createCredential(input: $i) { id } }`
		mCancel  = `mutation($id: ID!) { cancelRun(id: $id) { id } }`
		qNode    = `query($id: ID!) { node(id: $id) { id } }`
		qCost    = `query($from: Time!, $to: Time!) { costReport(from: $from, to: $to, groupBy: [DAY]) { calls } }`
		startVar = "i"
	)
	start := func(extra map[string]any) map[string]any {
		in := map[string]any{"workflowID": f.workflowID, "environmentID": f.envID, "input": map[string]any{"name": "ok"}}
		for k, v := range extra {
			in[k] = v
		}
		return map[string]any{startVar: in}
	}
	cases := []badCase{
		{"workflow name", mWF, map[string]any{"i": map[string]any{"name": nul, "slug": "nul-name"}}, "VALIDATION", "input.name"},
		{"workflow description", mWF, map[string]any{"i": map[string]any{"name": "n", "slug": "nul-desc", "description": nul}}, "VALIDATION", "input.description"},
		{"workflow name literal", `mutation { createWorkflow(input: {name: "a\u0000b", slug: "nul-lit"}) { id } }`, nil, "VALIDATION", "input.name"},
		{"definition key", mVer, map[string]any{"i": map[string]any{"workflowID": f.workflowID, "definition": defWith(func(d map[string]any) { d["x\x00"] = 1 })}}, "VALIDATION", ""},
		{"definition header value", mVer, map[string]any{"i": map[string]any{"workflowID": f.workflowID, "definition": httpDef(nul)}}, "VALIDATION", "input.definition.steps[0].request.headers.X-Test"},
		{"run input", mStart, start(map[string]any{"input": map[string]any{"name": nul}}), "VALIDATION", "input.input.name"},
		{"idempotency key", mStart, start(map[string]any{"idempotencyKey": nul}), "VALIDATION", "input.idempotencyKey"},
		{"webhook description", mHook, map[string]any{"i": map[string]any{"url": "http://127.0.0.1:9/hook", "description": nul}}, "VALIDATION", "input.description"},
		{"api key name", mKey, map[string]any{"i": map[string]any{"name": nul, "roles": []string{"VIEWER"}}}, "VALIDATION", "input.name"},
		{"model name", mPrice, map[string]any{"i": map[string]any{"provider": "openai", "model": nul, "inputUSDPerMTok": 1.0, "outputUSDPerMTok": 1.0}}, "VALIDATION", "input.model"},
		{"approval comment", mDecide, map[string]any{"i": map[string]any{"id": "apr_01m88yrff9cj5q7rc4mdm73122", "decision": "APPROVE", "comment": nul}}, "VALIDATION", "input.comment"},
		{"run id", mCancel, map[string]any{"id": "run_" + nul}, "VALIDATION", "id"},
		{"node id", qNode, map[string]any{"id": "wf_" + nul}, "VALIDATION", "id"},
		{"enum lower case", mKey, map[string]any{"i": map[string]any{"name": "k", "roles": []string{"viewer"}}}, "VALIDATION", ""},
		{"ent enum upper case", mEnv, map[string]any{"i": map[string]any{"name": "qa", "kind": "PRODUCTION"}}, "VALIDATION", ""},
		{"credential type upper case", mCred, map[string]any{"i": map[string]any{"environmentID": f.envID, "name": "c", "type": "BEARER", "secret": map[string]any{"token": "x"}}}, "VALIDATION", ""},
		{"time yesterday", qCost, map[string]any{"from": "yesterday", "to": "2030-01-01T00:00:00Z"}, "VALIDATION", "from"},
		{"map given a string", mVer, map[string]any{"i": map[string]any{"workflowID": f.workflowID, "definition": "steps: []"}}, "VALIDATION", "input.definition"},
		{"run input given a string", mStart, start(map[string]any{"input": "ada"}), "VALIDATION", "input.input"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient(t, len(tc.name), f.owner.token)
			r := c.do(tc.query, tc.vars)
			if r.Code() != tc.code {
				t.Fatalf("want %s, got: %s", tc.code, r.Raw)
			}
			p, _ := r.Errors[0].Extensions["path"].(string)
			if tc.path != "" && p != tc.path {
				t.Errorf("want path %q, got %q: %s", tc.path, p, r.Raw)
			}
			if tc.path == "" && p == "" {
				t.Errorf("no path: %s", r.Raw)
			}
			if strings.Contains(r.Raw, "\\u0000") {
				t.Errorf("the error echoes the NUL byte: %s", r.Raw)
			}
		})
	}
	badUnchanged(t, f.owner, before)
}

// TestHardeningIntrospectionOff: with introspection off (production's
// default), __schema and __type answer FORBIDDEN, not INTERNAL, and unknown
// fields get no "Did you mean" suggestion that would map the schema anyway.
func TestHardeningIntrospectionOff(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bad-introspect")
	st := newStack(t, 0, "SLUICE_GRAPHQL_INTROSPECTION=false", "SLUICE_DB_MAX_CONNS=4")
	c := f.owner.on(st.server)
	for _, q := range []string{
		`{ __schema { types { name } } }`,
		`{ __type(name: "Run") { name fields { name } } }`,
		`query { ...F } fragment F on Query { viewer { subject } __schema { queryType { name } } }`,
	} {
		r := c.do(q, nil)
		if r.Code() != "FORBIDDEN" {
			t.Errorf("%s: want FORBIDDEN, got %s", q, r.Raw)
		}
	}
	if got := str(c.ok(`{ __typename viewer { subject } }`, nil), "__typename"); got != "Query" {
		t.Errorf("__typename = %q", got)
	}
	r := c.do(`{ workflowz { totalCount } }`, nil)
	if r.Code() != "VALIDATION" || strings.Contains(r.Raw, "Did you mean") {
		t.Errorf("unknown field: want VALIDATION without suggestions, got %s", r.Raw)
	}
	// Development (introspection on) keeps both.
	r = f.owner.do(`{ workflowz { totalCount } }`, nil)
	if !strings.Contains(r.Raw, "Did you mean") {
		t.Errorf("development lost its suggestions: %s", r.Raw)
	}
}

// TestHardeningForeignKeyNotConflict: a write that refers to something that
// does not exist is not a uniqueness CONFLICT. A token naming a well-formed
// tenant id that no tenant has used to create a workflow answering
// CONFLICT "already exists" (the foreign key violation taken for a unique
// one); now it is NOT_FOUND (or refused at authentication, 401).
func TestHardeningForeignKeyNotConflict(t *testing.T) {
	t.Parallel()
	c := newClient(t, 0, token(t, ids.New(ids.Tenant), "owner"))
	r := c.do(mCreateWF, map[string]any{"n": "Ghost", "s": "ghost"})
	switch r.Code() {
	case "NOT_FOUND", "UNAUTHENTICATED":
	default:
		t.Fatalf("want NOT_FOUND (or UNAUTHENTICATED), got %s", r.Raw)
	}
}
