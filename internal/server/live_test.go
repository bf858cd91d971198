package server

// Tests of the live transports (graphql-transport-ws and SSE) and of the
// HTTP status of a FORBIDDEN error against a real Postgres: a database of
// the package run's own (internal/testdb), a tenant created like `sluice
// tenant create`, a run started by the run state machine, and the Hub on a
// reserved Redis database.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	coderws "github.com/coder/websocket"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "servertest", &testDB))
}

// deadline bounds a test's waits; nothing asserts how fast answers come.
const deadline = 30 * time.Second

// live is the real API on the package's database, served over HTTP, with a
// tenant holding one run.
type live struct {
	url      string
	tenantID string
	envID    string // the run's environment
	runID    string
	metrics  *Metrics
}

func newLive(t *testing.T) *live {
	t.Helper()
	ctx := context.Background()
	env := map[string]string{
		"SLUICE_ENV": "production", "SLUICE_JWT_SECRET": testSecret,
		"SLUICE_JWT_ISSUER": testIssuer, "SLUICE_JWT_AUDIENCE": testAudience,
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewJWTVerifier(ctx, auth.JWTConfig{Secret: []byte(testSecret), Issuer: testIssuer, Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb := testdb.Redis(t, "server-test")
	hub, err := events.NewHub(rdb, events.HubOptions{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := hub.Start(ctx); err != nil {
		t.Fatal(err)
	}
	v := vault.New(secrets.DevKeyRing())
	ctl := control.New(control.Options{Vault: v})
	// No dispatcher: the run stays queued. Its changes through the API
	// (cancelRun) reach subscribers as in production.
	pub := events.NewRedisPublisher(rdb, log)
	t.Cleanup(pub.Close)
	r := runs.New(runs.Options{Client: testDB.App, Vault: v, Log: log, Publisher: runPublisher{pub}})
	metrics := NewMetrics()
	s := New(Deps{
		Config: cfg, Log: log, Client: testDB.App, Auth: auth.NewAuthenticator(verifier, testDB.App),
		Control: ctl, Runs: r, Metrics: metrics, Hub: hub, Leases: auth.NewLeases(testDB.App, auth.LeasesOptions{Log: log}),
		Ready: func(context.Context) error { return nil },
	})
	srv := httptest.NewServer(s)
	t.Cleanup(func() { hub.Close(); srv.CloseClientConnections(); srv.Close() })

	tenantID, err := testDB.Tenant(ctx, "server test")
	if err != nil {
		t.Fatal(err)
	}
	l := &live{url: srv.URL, tenantID: tenantID, metrics: metrics}
	owner := viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})
	err = store.InTenant(owner, testDB.App, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		envRow, err := c.Environment.Query().Where(environment.Name("development")).Only(ctx)
		if err != nil {
			return err
		}
		wf, err := ctl.CreateWorkflow(ctx, "wf", "wf-"+testdb.RandHex(4), "")
		if err != nil {
			return err
		}
		ver, err := ctl.CreateWorkflowVersion(ctx, wf.ID, map[string]any{"schemaVersion": 1, "steps": []any{
			map[string]any{"id": "a", "type": "transform", "output": "1"},
		}})
		if err != nil {
			return err
		}
		if _, err := ctl.PublishWorkflowVersion(ctx, ver.ID); err != nil {
			return err
		}
		if _, err := ctl.DeployWorkflowVersion(ctx, ver.ID, envRow.ID); err != nil {
			return err
		}
		run, err := r.StartRun(ctx, runs.StartRunInput{WorkflowID: wf.ID, EnvironmentID: envRow.ID})
		if err == nil {
			l.runID, l.envID = run.ID, envRow.ID
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// runPublisher hands the run state machine's notices to Redis, as the
// API process wires it (internal/cli).
type runPublisher struct{ p *events.RedisPublisher }

func (e runPublisher) Publish(ctx context.Context, n runs.RunNotice) {
	e.p.Publish(ctx, events.Notice{
		TenantID: n.TenantID, RunID: n.RunID, Status: n.Status,
		CostMicroUSD: n.CostMicroUSD, Events: events.FromRunEvents(n.Events),
	})
}

// token mints a JWT for the tenant; no roles means the member's roles.
func (l *live) token(t *testing.T, subject string, roles ...string) string {
	t.Helper()
	tok, err := auth.MintHS256([]byte(testSecret), testIssuer, testAudience,
		auth.Claims{Subject: subject, TenantID: l.tenantID, Roles: roles}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

const runEventsQuery = `subscription($id: ID!) { runEvents(runID: $id) { seq type } }`

// wsMessage is a graphql-transport-ws message.
type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// dial opens a graphql-transport-ws connection.
func (l *live) dial(t *testing.T, ctx context.Context) *coderws.Conn {
	t.Helper()
	conn, _, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(l.url, "http")+"/graphql",
		&coderws.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func send(t *testing.T, ctx context.Context, conn *coderws.Conn, m string) {
	t.Helper()
	if err := conn.Write(ctx, coderws.MessageText, []byte(m)); err != nil {
		t.Fatal(err)
	}
}

// readUntilClose reads messages until the server closes the socket and
// returns the close code; an acknowledged connection fails the test.
func readUntilClose(t *testing.T, ctx context.Context, conn *coderws.Conn) coderws.StatusCode {
	t.Helper()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the socket is still open after %s", deadline)
			}
			return coderws.CloseStatus(err)
		}
		var m wsMessage
		_ = json.Unmarshal(b, &m)
		if m.Type == "connection_ack" || m.Type == "next" {
			t.Fatalf("refused connection got %s", b)
		}
	}
}

// TestWebsocketRefusals: a connection is acknowledged only for a valid
// credential in connection_init; otherwise it is closed with a 4xxx code
// graphql-transport-ws clients treat as final, and nothing is served.
func TestWebsocketRefusals(t *testing.T) {
	l := newLive(t)
	otherKey, err := auth.MintHS256([]byte(strings.Repeat("x", 40)), testIssuer, testAudience,
		auth.Claims{Subject: "u1", TenantID: l.tenantID, Roles: []string{"admin"}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sub := `{"id":"1","type":"subscribe","payload":{"query":"` + runEventsQuery + `","variables":{"id":"` + l.runID + `"}}}`
	cases := []struct {
		name     string
		messages []string
		code     coderws.StatusCode
	}{
		{"init payload not an object", []string{`{"type":"connection_init","payload":"x"}`}, closeBadRequest},
		{"no credential", []string{`{"type":"connection_init","payload":{}}`}, closeUnauthorized},
		{"bad signature", []string{`{"type":"connection_init","payload":{"Authorization":"Bearer ` + otherKey + `"}}`}, closeUnauthorized},
		{"not a bearer", []string{`{"type":"connection_init","payload":{"Authorization":"Basic dTpw"}}`}, closeUnauthorized},
		{"bad token", []string{`{"type":"connection_init","payload":{"token":"garbage"}}`}, closeUnauthorized},
		// No role in the tenant: a member nobody created.
		{"no role", []string{`{"type":"connection_init","payload":{"token":"` + l.token(t, "user_nobody") + `"}}`}, closeForbidden},
		// Subscribing before connection_init serves nothing: gqlgen closes
		// with 1002 (protocol error; graphql-transport-ws asks for 4401).
		{"subscribe first", []string{sub}, coderws.StatusProtocolError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			conn := l.dial(t, ctx)
			for _, m := range c.messages {
				send(t, ctx, conn, m)
			}
			if got := readUntilClose(t, ctx, conn); got != c.code {
				t.Errorf("close code %d, want %d", got, c.code)
			}
		})
	}
}

// TestWebsocketSubscribe: an authenticated connection is acknowledged and
// a subscription over it streams the run's stored events in order.
func TestWebsocketSubscribe(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	conn := l.dial(t, ctx)
	send(t, ctx, conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+l.token(t, "u1", "viewer")+`"}}`)
	read := func() wsMessage {
		t.Helper()
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %s: %v", b, err)
		}
		return m
	}
	if m := read(); m.Type != "connection_ack" {
		t.Fatalf("first message %+v, want connection_ack", m)
	}
	send(t, ctx, conn, `{"id":"1","type":"subscribe","payload":{"query":"`+runEventsQuery+`","variables":{"id":"`+l.runID+`"}}}`)
	m := read()
	for m.Type == "ping" || m.Type == "pong" {
		m = read()
	}
	var p struct {
		Data struct {
			RunEvents struct {
				Seq  int    `json:"seq"`
				Type string `json:"type"`
			} `json:"runEvents"`
		} `json:"data"`
		Errors []any `json:"errors"`
	}
	if err := json.Unmarshal(m.Payload, &p); err != nil || m.Type != "next" || m.ID != "1" {
		t.Fatalf("message %+v (%v), want next for 1", m, err)
	}
	if len(p.Errors) != 0 || p.Data.RunEvents.Seq != 1 || p.Data.RunEvents.Type != "run.queued" {
		t.Errorf("first event %s, want seq 1 run.queued", m.Payload)
	}
}

// TestSSESubscribe: a subscription POSTed with Accept: text/event-stream
// streams the run's events as SSE "next" frames; without a credential it
// is refused with 401 before any stream opens.
func TestSSESubscribe(t *testing.T) {
	l := newLive(t)
	body := `{"query":"` + runEventsQuery + `","variables":{"id":"` + l.runID + `"}}`
	open := func(ctx context.Context, tok string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "POST", l.url+"/graphql", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if resp := open(ctx, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("SSE without a credential: %d, want 401", resp.StatusCode)
	}
	resp := open(ctx, l.token(t, "u1", "viewer"))
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		line := sc.Text()
		if e, ok := strings.CutPrefix(line, "event: "); ok {
			event = e
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || event != "next" {
			continue
		}
		var p struct {
			Data struct {
				RunEvents struct {
					Seq  int    `json:"seq"`
					Type string `json:"type"`
				} `json:"runEvents"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(data), &p); err != nil || p.Data.RunEvents.Seq != 1 || p.Data.RunEvents.Type != "run.queued" {
			t.Fatalf("first SSE frame %s (%v), want seq 1 run.queued", data, err)
		}
		return
	}
	t.Fatalf("the stream ended without a next frame: %v", sc.Err())
}

// TestForbiddenStatus: FORBIDDEN is 403 when authentication refuses the
// credential (a token granting no role in its tenant) and 200, as a
// GraphQL error, when an operation is refused (a viewer's mutation,
// introspection while it is off).
func TestForbiddenStatus(t *testing.T) {
	l := newLive(t)
	post := func(tok, query string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", l.url+"/graphql", strings.NewReader(query))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct {
			Errors []struct {
				Extensions struct {
					Code string `json:"code"`
				} `json:"extensions"`
			} `json:"errors"`
		}
		raw, _ := io.ReadAll(resp.Body)
		if err := json.Unmarshal(raw, &b); err != nil || len(b.Errors) == 0 {
			t.Fatalf("status %d body %s: want an error", resp.StatusCode, raw)
		}
		return resp.StatusCode, b.Errors[0].Extensions.Code
	}
	cases := []struct {
		name, tok, query string
		status           int
	}{
		{"no role in the tenant", l.token(t, "user_nobody"), `{"query":"{ __typename }"}`, 403},
		{"viewer's mutation", l.token(t, "u1", "viewer"), `{"query":"mutation { createWorkflow(input: {name: \"w\", slug: \"w-forbidden\"}) { id } }"}`, 200},
		{"introspection off", l.token(t, "u1", "viewer"), `{"query":"{ __schema { queryType { name } } }"}`, 200},
	}
	for _, c := range cases {
		if status, code := post(c.tok, c.query); status != c.status || code != "FORBIDDEN" {
			t.Errorf("%s: %d %s, want %d FORBIDDEN", c.name, status, code, c.status)
		}
	}
}
