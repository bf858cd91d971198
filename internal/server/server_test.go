package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/graph/generated"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/store"
)

const (
	testSecret   = "server-test-secret-of-at-least-32-bytes"
	testIssuer   = "sluice-test"
	testAudience = "sluice"
)

// errorBody is the GraphQL-shaped error every middleware answers with.
type errorBody struct {
	Errors []struct {
		Message    string `json:"message"`
		Extensions struct {
			Code string `json:"code"`
		} `json:"extensions"`
	} `json:"errors"`
}

func decodeError(t *testing.T, rec *httptest.ResponseRecorder) errorBody {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json; body %s", ct, rec.Body)
	}
	var b errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil || len(b.Errors) != 1 {
		t.Fatalf("body %q is not one GraphQL error: %v", rec.Body, err)
	}
	return b
}

// testServer is the real API handler. Its database is unreachable (a closed
// port): only requests that fail before any resolver runs are served, and a
// lookup that needs Postgres meets an outage. ready is what /readyz reports.
func testServer(t *testing.T, ready *atomic.Value) *Server {
	t.Helper()
	env := map[string]string{
		"SLUICE_ENV":            "production",
		"SLUICE_JWT_SECRET":     testSecret,
		"SLUICE_JWT_ISSUER":     testIssuer,
		"SLUICE_JWT_AUDIENCE":   testAudience,
		"SLUICE_MAX_BODY_BYTES": "4096",
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewJWTVerifier(context.Background(), auth.JWTConfig{Secret: []byte(testSecret), Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/none?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	client := store.NewClient(db)
	return New(Deps{
		Config:  cfg,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Client:  client,
		Auth:    auth.NewAuthenticator(verifier, client),
		Metrics: NewMetrics(),
		Ready: func(context.Context) error {
			if err, _ := ready.Load().(error); err != nil {
				return err
			}
			return nil
		},
	})
}

func do(h http.Handler, method, path string, header map[string]string, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestServerRoutes(t *testing.T) {
	var ready atomic.Value
	s := testServer(t, &ready)

	if rec := do(s, "GET", "/healthz", nil, ""); rec.Code != 200 || rec.Body.String() != "ok\n" {
		t.Errorf("/healthz = %d %q", rec.Code, rec.Body)
	}
	if rec := do(s, "GET", "/readyz", nil, ""); rec.Code != 200 {
		t.Errorf("/readyz while ready = %d %q", rec.Code, rec.Body)
	}
	ready.Store(errors.New("redis is down"))
	if rec := do(s, "GET", "/readyz", nil, ""); rec.Code != 503 || !strings.Contains(rec.Body.String(), "redis is down") {
		t.Errorf("/readyz while not ready = %d %q", rec.Code, rec.Body)
	}
	// /metrics lives on its own address, never on the API's.
	if rec := do(s, "GET", "/metrics", nil, ""); rec.Code != 404 {
		t.Errorf("/metrics on the API handler = %d, want 404", rec.Code)
	}
	// Without introspection, GET /graphql (no websocket upgrade) is refused.
	rec := do(s, "GET", "/graphql", nil, "")
	if rec.Code != 405 || rec.Header().Get("Allow") != "POST, OPTIONS" {
		t.Errorf("GET /graphql = %d Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
	if b := decodeError(t, rec); b.Errors[0].Extensions.Code != "VALIDATION" {
		t.Errorf("GET /graphql code = %q", b.Errors[0].Extensions.Code)
	}
}

func TestServerAuthentication(t *testing.T) {
	var ready atomic.Value
	s := testServer(t, &ready)
	body := `{"query":"{ __typename }"}`
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(authz string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "Authorization": authz}
	}
	token, err := auth.MintHS256([]byte(testSecret), testIssuer, testAudience,
		auth.Claims{Subject: "u1", TenantID: ids.New(ids.Tenant), Roles: []string{"admin"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherSecret, err := auth.MintHS256([]byte(strings.Repeat("x", 40)), testIssuer, testAudience,
		auth.Claims{Subject: "u1", TenantID: ids.New(ids.Tenant), Roles: []string{"admin"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		header     map[string]string
		status     int
		code       string
		retryAfter string
	}{
		{"no credential", jsonCT, 401, "UNAUTHENTICATED", ""},
		{"not a bearer", with("Basic dTpw"), 401, "UNAUTHENTICATED", ""},
		{"bad signature", with("Bearer " + otherSecret), 401, "UNAUTHENTICATED", ""},
		// A valid token whose tenant must be looked up while Postgres is
		// unreachable: the outage is a 503 to retry, not a 401 or a 500.
		{"database down", with("Bearer " + token), 503, "UNAVAILABLE", retryAfterSeconds},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := do(s, "POST", "/graphql", c.header, body)
			if rec.Code != c.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, c.status, rec.Body)
			}
			if got := decodeError(t, rec).Errors[0].Extensions.Code; got != c.code {
				t.Errorf("code = %q, want %q", got, c.code)
			}
			if got := rec.Header().Get("Retry-After"); got != c.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, c.retryAfter)
			}
			if rec.Header().Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
		})
	}
	// The body is checked before the credential: no token needed for a 415.
	if rec := do(s, "POST", "/graphql", map[string]string{"Content-Type": "text/plain"}, body); rec.Code != 415 {
		t.Errorf("text/plain POST = %d, want 415", rec.Code)
	}
}

func TestReadBody(t *testing.T) {
	const max = 32
	valid := `{"query":"{ a }"}`
	cases := []struct {
		name        string
		contentType string
		body        string
		unknownLen  bool // no Content-Length: only reading finds the size
		status      int
	}{
		{"json", "application/json", valid, false, 200},
		{"json with charset", "application/json; charset=utf-8", valid, false, 200},
		{"json chunked", "application/json", valid, true, 200},
		{"no content type", "", valid, false, 415},
		{"wrong content type", "text/plain", valid, false, 415},
		{"form", "application/x-www-form-urlencoded", valid, false, 415},
		{"too large", "application/json", `{"query":"` + strings.Repeat("a", max) + `"}`, false, 413},
		{"too large chunked", "application/json", `{"query":"` + strings.Repeat("a", max) + `"}`, true, 413},
		{"exactly the limit", "application/json", `{"query":"` + strings.Repeat("a", max-len(`{"query":""}`)) + `"}`, false, 200},
		{"not json", "application/json", `query { a }`, false, 400},
		{"json but not an object", "application/json", `[1,2]`, false, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got string
			var gotLen int64
			called := false
			h := readBody(max, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				b, _ := io.ReadAll(r.Body)
				got, gotLen = string(b), r.ContentLength
				w.WriteHeader(200)
			}))
			req := httptest.NewRequest("POST", "/graphql", strings.NewReader(c.body))
			if c.unknownLen {
				req.ContentLength = -1
			}
			if c.contentType != "" {
				req.Header.Set("Content-Type", c.contentType)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, c.status, rec.Body)
			}
			if c.status != 200 {
				if called {
					t.Error("the next handler ran for a refused body")
				}
				if code := decodeError(t, rec).Errors[0].Extensions.Code; code != "VALIDATION" {
					t.Errorf("code = %q, want VALIDATION", code)
				}
				if strings.Contains(rec.Body.String(), strings.Repeat("a", max)) {
					t.Error("the refused body is echoed back")
				}
				return
			}
			if got != c.body || gotLen != int64(len(c.body)) {
				t.Errorf("next saw %q (length %d), want %q intact", got, gotLen, c.body)
			}
		})
	}
}

func TestWithRequestKeepsOnlyWellFormedIDs(t *testing.T) {
	cases := []struct {
		incoming string
		keep     bool
	}{
		{"req-123", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{strings.Repeat("a", 65), false},
		{"has space", false},
		{"tab\there", false},
		{`quote"d`, false},
	}
	for _, c := range cases {
		var inCtx string
		h := withRequest(slog.New(slog.NewTextHandler(io.Discard, nil)), NewMetrics(), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inCtx = requestid.FromContext(r.Context())
		}))
		req := httptest.NewRequest("GET", "/healthz", nil)
		if c.incoming != "" {
			req.Header["X-Request-Id"] = []string{c.incoming}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		out := rec.Header().Get("X-Request-Id")
		if out != inCtx {
			t.Errorf("%q: response id %q differs from the request's %q", c.incoming, out, inCtx)
		}
		if c.keep && out != c.incoming {
			t.Errorf("%q: replaced by %q", c.incoming, out)
		}
		if !c.keep && (out == c.incoming || out == "" || strings.ContainsAny(out, " \t\"")) {
			t.Errorf("%q: kept or replaced by a malformed id %q", c.incoming, out)
		}
	}
}

func TestWithRequestBoundsRouteLabels(t *testing.T) {
	m := NewMetrics()
	h := withRequest(slog.New(slog.NewTextHandler(io.Discard, nil)), m, http.NotFoundHandler())
	for _, p := range []string{"/a", "/b/c", "/graphql", "/healthz"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	routes := map[string]uint64{}
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_http_request_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "route" {
					routes[l.GetValue()] += s.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	want := map[string]uint64{"other": 2, "/graphql": 1, "/healthz": 1}
	if len(routes) != len(want) {
		t.Fatalf("route labels %v, want %v", routes, want)
	}
	for k, v := range want {
		if routes[k] != v {
			t.Errorf("route labels %v, want %v", routes, want)
		}
	}
}

func TestUnavailableStatus(t *testing.T) {
	respond := func(code string) graphql.ResponseHandler {
		return func(context.Context) *graphql.Response {
			return &graphql.Response{Errors: gqlerror.List{{Message: "x", Extensions: map[string]any{"code": code}}}}
		}
	}
	cases := []struct {
		name   string
		code   string // error code of the GraphQL response
		status int    // status the handler writes
		want   int
	}{
		{"unavailable", "UNAVAILABLE", 200, 503},
		{"other error", "NOT_FOUND", 200, 200},
		{"unavailable but already an error status", "UNAVAILABLE", 400, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := withUnavailableStatus(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				unavailableStatus{}.InterceptResponse(r.Context(), respond(c.code))
				if c.status != 200 {
					w.WriteHeader(c.status)
				}
				_, _ = w.Write([]byte(`{}`))
			}))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/graphql", nil))
			if rec.Code != c.want {
				t.Errorf("status = %d, want %d", rec.Code, c.want)
			}
			if ra := rec.Header().Get("Retry-After"); (c.want == 503) != (ra == retryAfterSeconds) {
				t.Errorf("Retry-After = %q with status %d", ra, rec.Code)
			}
		})
	}
	// Outside withUnavailableStatus (a websocket message) the extension
	// passes the response through untouched.
	resp := unavailableStatus{}.InterceptResponse(context.Background(), respond("UNAVAILABLE"))
	if resp == nil || len(resp.Errors) != 1 {
		t.Errorf("response changed: %+v", resp)
	}
}

func TestStreamDetection(t *testing.T) {
	req := func(h map[string]string) *http.Request {
		r := httptest.NewRequest("GET", "/graphql", nil)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	if !isWebsocketUpgrade(req(map[string]string{"Upgrade": "WebSocket", "Connection": "Upgrade"})) {
		t.Error("a websocket upgrade (any case) is not detected")
	}
	if isWebsocketUpgrade(req(map[string]string{"Upgrade": "h2c"})) || isWebsocketUpgrade(req(nil)) {
		t.Error("a non-websocket request counts as an upgrade")
	}
	if !isEventStream(req(map[string]string{"Accept": "application/json, text/event-stream"})) {
		t.Error("an SSE Accept is not detected")
	}
	if isEventStream(req(map[string]string{"Accept": "application/json"})) || isEventStream(req(nil)) {
		t.Error("a plain request counts as SSE")
	}
}

// TestMetricLabelsAreBounded: no label value is chosen by the client; an
// operation name, an unknown field or a foreign error code folds into
// "other".
func TestMetricLabelsAreBounded(t *testing.T) {
	schema := generated.NewExecutableSchema(generated.Config{}).Schema()
	fields := rootFields(schema)
	for _, def := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		if def == nil {
			continue
		}
		for _, f := range def.Fields {
			if !fields[f.Name] {
				t.Errorf("root field %s.%s missing", def.Name, f.Name)
			}
		}
	}
	if fields["__typename"] || fields["clientChosen"] {
		t.Errorf("rootFields has names the schema does not declare: %v", fields)
	}
	var known []string
	for f := range fields {
		if !strings.HasPrefix(f, "__") {
			known = append(known, f)
		}
	}
	sort.Strings(known)
	if len(known) == 0 {
		t.Fatal("no root fields")
	}
	real := known[0]

	m := NewMetrics()
	g := graphqlMetrics{m: m, fields: fields}
	op := func(kind ast.Operation, field string) *graphql.OperationContext {
		return &graphql.OperationContext{Operation: &ast.OperationDefinition{
			Operation:    kind,
			Name:         "ClientChosenName",
			SelectionSet: ast.SelectionSet{&ast.Field{Name: field, Alias: "alias"}},
		}}
	}
	cases := []struct {
		op       *graphql.OperationContext
		typ, fld string
	}{
		{op(ast.Query, real), "query", real},
		{op(ast.Mutation, "attackerField"), "mutation", "other"},
		{op(ast.Operation("bogus"), real), "unknown", real},
		{&graphql.OperationContext{}, "unknown", "other"},
	}
	for _, c := range cases {
		if typ, fld := g.labels(c.op); typ != c.typ || fld != c.fld {
			t.Errorf("labels = (%q, %q), want (%q, %q)", typ, fld, c.typ, c.fld)
		}
	}

	ctx := graphql.WithOperationContext(context.Background(), op(ast.Query, "attackerField"))
	g.InterceptResponse(ctx, func(context.Context) *graphql.Response {
		return &graphql.Response{Errors: gqlerror.List{
			{Message: "a", Extensions: map[string]any{"code": "ATTACKER_CODE"}},
			{Message: "b", Extensions: map[string]any{"code": "NOT_FOUND"}},
		}}
	})
	errs := series(t, m, "sluice_graphql_operation_errors_total")
	// Keys are code,field,type.
	want := map[string]float64{"other,other,query": 1, "NOT_FOUND,other,query": 1}
	if len(errs) != len(want) || errs["other,other,query"] != 1 || errs["NOT_FOUND,other,query"] != 1 {
		t.Errorf("error series %v, want %v", errs, want)
	}
	if d := series(t, m, "sluice_graphql_operation_duration_seconds"); len(d) != 1 || d["other,query"] != 1 { // field,type
		t.Errorf("duration series %v, want one other,query", d)
	}
}

func TestErrorCodesFoldGqlgenCodesIntoValidation(t *testing.T) {
	resp := errorCodes{}.InterceptResponse(context.Background(), func(context.Context) *graphql.Response {
		return &graphql.Response{Errors: gqlerror.List{
			{Message: "a", Extensions: map[string]any{"code": "GRAPHQL_PARSE_FAILED"}},
			{Message: "b", Extensions: map[string]any{"code": "FORBIDDEN"}},
		}}
	})
	if e := resp.Errors[0].Extensions; e["code"] != "VALIDATION" || e["reason"] != "GRAPHQL_PARSE_FAILED" {
		t.Errorf("gqlgen code mapped to %v", e)
	}
	if e := resp.Errors[1].Extensions; e["code"] != "FORBIDDEN" || e["reason"] != nil {
		t.Errorf("Sluice code changed to %v", e)
	}
}

// series gathers one metric family: label values joined by commas (in
// label-name order) to counter value or histogram sample count.
func series(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var vals []string
			for _, l := range s.GetLabel() {
				vals = append(vals, l.GetValue())
			}
			v := s.GetCounter().GetValue()
			if h := s.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			out[strings.Join(vals, ",")] += v
		}
	}
	return out
}

// countingReader records how much of a body was read.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// A body announced larger than the limit is refused unread.
func TestReadBodyRefusesADeclaredOversizeUnread(t *testing.T) {
	body := &countingReader{r: strings.NewReader(`{"query":"` + strings.Repeat("a", 100) + `"}`)}
	h := readBody(32, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("the next handler ran") }))
	req := httptest.NewRequest("POST", "/graphql", body)
	req.ContentLength = 112
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 413 || body.n != 0 {
		t.Errorf("status %d after reading %d bytes; want 413 unread", rec.Code, body.n)
	}
}
