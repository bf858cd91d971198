package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

const qBadState = `{ workflows { totalCount edges { node { id slug name description } } }
	environments { totalCount edges { node { id name kind } } }
	auditLogs { totalCount } credentials { totalCount } apiKeys { totalCount } }`

// badState is what a tenant's owner sees of it; bad input must leave it
// exactly as it was.
func badState(c *client) string {
	c.t.Helper()
	b, _ := json.Marshal(c.ok(qBadState, nil))
	return string(b)
}

// badUnchanged fails t when the tenant's state differs from before.
func badUnchanged(t *testing.T, c *client, before string) {
	t.Helper()
	if after := badState(c); after != before {
		t.Errorf("bad input changed the tenant:\nbefore %s\nafter  %s", before, after)
	}
}

// badPost sends body as is (with contentLength -1, chunked) and returns the
// status and decoded JSON error body.
func badPost(t *testing.T, c *client, body io.Reader, contentLength int64, contentType string) *result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, c.url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = contentLength
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := &result{Status: resp.StatusCode, Raw: string(b)}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "application/graphql-response+json") {
		t.Errorf("status %d answered with Content-Type %q: %s", resp.StatusCode, ct, b)
	}
	var decoded struct {
		Data   map[string]any `json:"data"`
		Errors []gqlError     `json:"errors"`
	}
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatalf("response is not JSON (status %d): %s", resp.StatusCode, b)
	}
	r.Data, r.Errors = decoded.Data, decoded.Errors
	return r
}

// TestBadRequests sends malformed HTTP requests: each gets a JSON error with
// a clear status and writes nothing.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bad-http")
	before := badState(f.owner)
	create := `mutation { createWorkflow(input: {name: "Sneaky", slug: "sneaky"}) { id } }`

	t.Run("oversized body", func(t *testing.T) {
		for i, chunked := range []bool{false, true} {
			c := newClient(t, i, f.owner.token)
			pad := strings.Repeat("x", 1<<20)
			body, _ := json.Marshal(map[string]any{"query": create, "variables": map[string]any{"pad": pad}})
			length := int64(len(body))
			if chunked {
				length = -1 // the limit must hold without a Content-Length too
			}
			r := badPost(t, c, io.MultiReader(bytes.NewReader(body)), length, "application/json")
			if r.Status != http.StatusRequestEntityTooLarge || len(r.Errors) == 0 {
				t.Errorf("chunked=%v: want 413 with an error, got %d %s", chunked, r.Status, r.Raw)
			} else if !strings.Contains(r.Errors[0].Message, "larger than") {
				t.Errorf("chunked=%v: unclear message %q", chunked, r.Errors[0].Message)
			}
		}
		// Just under the limit is fine.
		body, _ := json.Marshal(map[string]any{"query": "{ viewer { subject } }", "variables": map[string]any{"pad": strings.Repeat("x", 1<<20-200)}})
		if r := f.owner.raw(body, "application/json"); r.Status != 200 || len(r.Errors) > 0 {
			t.Errorf("body under the limit: %d %s", r.Status, r.Raw)
		}
		badUnchanged(t, f.owner, before)
	})

	t.Run("malformed JSON", func(t *testing.T) {
		secret := "canary-" + randHex(16)
		for i, body := range []string{
			`{"query": "` + create + `", `,
			`{"query": ` + secret,
			`not json at all`,
			`{"query": "{ viewer { subject } }"} trailing`,
			``,
			`[]`,
			`{"query": 5, "variables": {"token": "` + secret + `"}}`,
			`{"query": "{ viewer { subject } }", "variables": ["` + secret + `"]}`,
		} {
			r := badPost(t, newClient(t, i, f.owner.token), strings.NewReader(body), int64(len(body)), "application/json")
			if r.Status != http.StatusBadRequest || r.Code() == "INTERNAL" || len(r.Errors) == 0 {
				t.Errorf("body %q: want 400 with a client error, got %d %s", body, r.Status, r.Raw)
			}
			if strings.Contains(r.Raw, secret) {
				t.Errorf("body %q: error echoes the body: %s", body, r.Raw)
			}
		}
		if strings.Contains(allLogs(), secret) {
			t.Error("a malformed body was written to the server log")
		}
		badUnchanged(t, f.owner, before)
	})

	t.Run("wrong content type", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"query": create})
		for i, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "", "application/json-ish"} {
			r := badPost(t, newClient(t, i, f.owner.token), bytes.NewReader(body), int64(len(body)), ct)
			if r.Status != http.StatusUnsupportedMediaType || len(r.Errors) == 0 || !strings.Contains(r.Errors[0].Message, "application/json") {
				t.Errorf("Content-Type %q: want 415 naming application/json, got %d %s", ct, r.Status, r.Raw)
			}
		}
		// Parameters on the right type are fine.
		r := badPost(t, f.owner, strings.NewReader(`{"query":"{ viewer { subject } }"}`), -1, "application/json; charset=utf-8")
		if r.Status != 200 || len(r.Errors) > 0 {
			t.Errorf("application/json with charset: %d %s", r.Status, r.Raw)
		}
		badUnchanged(t, f.owner, before)
	})

	t.Run("no token", func(t *testing.T) {
		r := newClient(t, 1, "").do(create, nil)
		if r.Status != http.StatusUnauthorized || r.Code() != "UNAUTHENTICATED" {
			t.Errorf("want 401 UNAUTHENTICATED, got %d %s", r.Status, r.Raw)
		}
		r = newClient(t, 0, "not-a-jwt").do(create, nil)
		if r.Status != http.StatusUnauthorized || r.Code() != "UNAUTHENTICATED" {
			t.Errorf("bad token: want 401 UNAUTHENTICATED, got %d %s", r.Status, r.Raw)
		}
		badUnchanged(t, f.owner, before)
	})

	t.Run("not a query", func(t *testing.T) {
		for i, q := range []string{"", "mutation {", "{ nosuchfield }", `mutation { createWorkflow(input: {name: "x"}) { id } }`} {
			r := newClient(t, i, f.owner.token).do(q, nil)
			if len(r.Errors) == 0 || r.Code() == "INTERNAL" || r.Status < 400 {
				t.Errorf("query %q: want a 4xx client error, got %d %s", q, r.Status, r.Raw)
			}
		}
		badUnchanged(t, f.owner, before)
	})
}

// TestBadGraphQLInput sends well-formed requests with bad values: each is
// refused with a code and a field path, and nothing is written.
func TestBadGraphQLInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bad-gql")
	c := newClient(t, 1, f.owner.token)
	before := badState(c)

	t.Run("unknown input field", func(t *testing.T) {
		r := c.do(`mutation { createWorkflow(input: {name: "Foo", slug: "foo", foo: 1}) { id } }`, nil)
		if r.Code() != "VALIDATION" || r.Errors[0].Extensions["reason"] != "GRAPHQL_VALIDATION_FAILED" || !strings.Contains(r.Errors[0].Message, `"foo"`) {
			t.Errorf("inline: want a validation error naming foo, got %s", r.Raw)
		}
		r = c.do(`mutation($in: CreateWorkflowInput!) { createWorkflow(input: $in) { id } }`,
			map[string]any{"in": map[string]any{"name": "Foo", "slug": "foo", "foo": 1}})
		if r.Code() != "VALIDATION" || r.Errors[0].Extensions["reason"] != "GRAPHQL_VALIDATION_FAILED" || !strings.Contains(r.Raw, `"foo"`) {
			t.Errorf("variable: want a validation error naming foo, got %s", r.Raw)
		}
		badUnchanged(t, c, before)
	})

	t.Run("bad enum value", func(t *testing.T) {
		r := c.do(`mutation($k: EnvironmentKind!) { createEnvironment(input: {name: "qa", kind: $k}) { id } }`, map[string]any{"k": "prod"})
		if r.Code() != "VALIDATION" || r.Errors[0].Extensions["reason"] != "GRAPHQL_VALIDATION_FAILED" || !strings.Contains(r.Errors[0].Message, "EnvironmentKind") {
			t.Errorf("want a validation error naming EnvironmentKind, got %s", r.Raw)
		}
		badUnchanged(t, c, before)
	})

	t.Run("too deep", func(t *testing.T) {
		q := "id"
		for range 5 {
			q = "versions { edges { node { workflow { " + q + " } } } }"
		}
		q = "{ workflows { edges { node { " + q + " } } } }"
		r := c.do(q, nil)
		if r.Code() != "VALIDATION" || !strings.Contains(r.Errors[0].Message, "deep") || r.Data != nil {
			t.Errorf("want VALIDATION for depth, got %s", r.Raw)
		}
		// The same shape within the limit works.
		ok := "{ workflows { edges { node { versions { edges { node { workflow { id } } } } } } } }"
		c.ok(ok, nil)
	})

	t.Run("too complex", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		// Lists count by their page size: 100 aliases of a page of runs
		// with their steps are over the limit.
		for i := range 100 {
			b.WriteString(" v" + strconv.Itoa(i) + ": runs(first: 200) { edges { node { id steps { stepID output } } } }")
		}
		b.WriteString(" }")
		r := c.do(b.String(), nil)
		if len(r.Errors) == 0 || r.Data != nil || !strings.Contains(r.Errors[0].Message, "complexity") {
			t.Errorf("want a complexity error, got %.500s", r.Raw)
		}
		if code := r.Code(); code != "VALIDATION" || r.Errors[0].Extensions["reason"] != "COMPLEXITY_LIMIT_EXCEEDED" {
			t.Errorf("complexity error code %q", code)
		}
		// The same mutation repeated is refused as a whole, before any write.
		b.Reset()
		b.WriteString("mutation {")
		for i := range 300 {
			b.WriteString(" w" + strconv.Itoa(i) + `: createWorkflow(input: {name: "W", slug: "w-` + strconv.Itoa(i) + `"}) { id slug name description }`)
		}
		b.WriteString(" }")
		if r := c.do(b.String(), nil); len(r.Errors) == 0 || r.Data != nil {
			t.Errorf("want a complexity error for many mutations, got %.500s", r.Raw)
		}
		badUnchanged(t, c, before)
	})

	type bad struct {
		name, query string
		vars        map[string]any
		code, path  string
	}
	long := strings.Repeat("n", 201)
	tests := []bad{
		{"workflow slug with spaces", mCreateWF, map[string]any{"n": "Fine", "s": "Not A Slug"}, "VALIDATION", "input.slug"},
		{"workflow slug upper case", mCreateWF, map[string]any{"n": "Fine", "s": "Greeter2"}, "VALIDATION", "input.slug"},
		{"workflow slug empty", mCreateWF, map[string]any{"n": "Fine", "s": ""}, "VALIDATION", "input.slug"},
		{"workflow slug too long", mCreateWF, map[string]any{"n": "Fine", "s": "a" + strings.Repeat("b", 63)}, "VALIDATION", "input.slug"},
		{"workflow name empty", mCreateWF, map[string]any{"n": "", "s": "fine"}, "VALIDATION", "input.name"},
		{"workflow name too long", mCreateWF, map[string]any{"n": long, "s": "fine"}, "VALIDATION", "input.name"},
		{"workflow description too long", `mutation($d: String) { createWorkflow(input: {name: "Fine", slug: "fine", description: $d}) { id } }`,
			map[string]any{"d": strings.Repeat("d", 2001)}, "VALIDATION", "input.description"},
		{"environment name with spaces", `mutation($n: String!) { createEnvironment(input: {name: $n, kind: staging}) { id } }`,
			map[string]any{"n": "Prod EU"}, "VALIDATION", "input.name"},
		{"environment name empty", `mutation($n: String!) { createEnvironment(input: {name: $n, kind: staging}) { id } }`,
			map[string]any{"n": ""}, "VALIDATION", "input.name"},
		{"environment name taken", `mutation($n: String!) { createEnvironment(input: {name: $n, kind: staging}) { id } }`,
			map[string]any{"n": "production"}, "CONFLICT", ""},
		{"API key name empty", mCreateKey, map[string]any{"n": "", "r": []string{"VIEWER"}}, "VALIDATION", "input.name"},
		{"API key without roles", mCreateKey, map[string]any{"n": "ci", "r": []string{}}, "VALIDATION", "input.roles"},
		{"API key expired", `mutation { createAPIKey(input: {name: "old", roles: [VIEWER], expiresAt: "2001-01-01T00:00:00Z"}) { token } }`,
			nil, "VALIDATION", "input.expiresAt"},
		{"credential name empty", mCreateCred, map[string]any{"e": f.envID, "n": "", "t": "bearer", "s": map[string]any{"token": "x"}}, "VALIDATION", "input.name"},
		{"workflow version for a missing workflow", mCreateVer, map[string]any{"w": "wf_01jd0000000000000000000000", "d": simpleDefinition()}, "NOT_FOUND", ""},
		{"deploy to a missing environment", mDeploy, map[string]any{"v": f.versionID, "e": "env_01jd0000000000000000000000"}, "NOT_FOUND", "input.environmentID"},
		{"deploy a workflow id as a version", mDeploy, map[string]any{"v": f.workflowID, "e": f.envID}, "NOT_FOUND", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newClient(t, i, c.token).fail(tt.code, tt.query, tt.vars)
			if tt.path != "" && !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
			if r.Errors[0].Message == "" {
				t.Error("empty message")
			}
			badUnchanged(t, c, before)
		})
	}

	t.Run("unknown ids", func(t *testing.T) {
		for _, id := range []string{"zzz_01jd0000000000000000000000", "", "no-prefix", "cred_", "credv_01jd0000000000000000000000", "wf_01jd0000000000000000000000"} {
			d := c.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id})
			if get(d, "node") != nil {
				t.Errorf("node(%q) = %v, want null", id, d)
			}
		}
		d := c.ok(`query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": []string{"zzz_1", f.workflowID}})
		if list, _ := get(d, "nodes").([]any); len(list) != 2 || list[0] != nil || get(list[1], "id") != f.workflowID {
			t.Errorf("nodes: %v", d)
		}
		many := make([]string, 101)
		for i := range many {
			many[i] = f.workflowID
		}
		c.fail("VALIDATION", `query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": many})
		badUnchanged(t, c, before)
	})
}

// TestFailedMutationWritesNothing checks that a mutation failing after an
// earlier write in the same request leaves nothing behind.
func TestFailedMutationWritesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bad-half")
	c := newClient(t, 1, f.owner.token)
	before := badState(c)

	r := c.fail("CONFLICT", mCreateWF, map[string]any{"n": "Again", "s": "greeter"})
	if !strings.Contains(r.Errors[0].Message, "greeter") {
		t.Errorf("conflict does not name the slug: %s", r.Raw)
	}
	badUnchanged(t, c, before)

	// Two mutations in one request: the first succeeds, the second fails, so
	// the whole request rolls back.
	r = c.do(`mutation {
		a: createWorkflow(input: {name: "First", slug: "first"}) { id }
		b: createWorkflow(input: {name: "Again", slug: "greeter"}) { id }
	}`, nil)
	if r.Code() != "CONFLICT" {
		t.Fatalf("want CONFLICT, got %s", r.Raw)
	}
	badUnchanged(t, c, before)
	d := c.ok(`{ workflows(where: {slug: "first"}) { totalCount } }`, nil)
	if get(d, "workflows.totalCount") != float64(0) {
		t.Errorf("first mutation of a failed request was kept: %v", d)
	}

	// The same with a validation failure after a credential write.
	r = c.do(`mutation($e: ID!) {
		a: createCredential(input: {environmentID: $e, name: "kept", type: bearer, secret: {token: "x"}}) { id }
		b: createCredential(input: {environmentID: $e, name: "bad", type: bearer, secret: {}}) { id }
	}`, map[string]any{"e": f.envID})
	if r.Code() != "VALIDATION" {
		t.Fatalf("want VALIDATION, got %s", r.Raw)
	}
	badUnchanged(t, c, before)

	// And the tenant still works afterwards.
	c.ok(mCreateWF, map[string]any{"n": "First", "s": "first"})
}
