package e2e

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// OAuth2 connections (internal/connections): authorization code with PKCE
// through GET /oauth/callback, refresh with rotating refresh tokens across
// workers, runs that wait for a revoked connection and go on by themselves
// once it is authorized again, isolation and bad input. The provider is
// oauthFake, on loopback.

const (
	qConn = `query($id: ID!) { node(id: $id) { ... on Credential { id connection { status grant provider scopes grantedScopes account
		expiresAt lastRefreshedAt nextRefreshAt consecutiveFailures lastError } } } }`
	mBeginAuth = `mutation($c: ID!, $r: String!) { beginAuthorization(input: {credentialID: $c, redirectAfter: $r}) { url expiresAt } }`
	// connRedirect is the callback URL the stack gives providers. Nothing
	// listens there: the test reads the provider's redirect and replays
	// its query on the stack's API server, as a browser would on the real
	// address.
	connRedirect = "http://127.0.0.1:9/oauth/callback"
	connAfter    = "http://127.0.0.1:9/after?tab=integrations"
)

// connStack is a stack configured for connection tests: the callback URL,
// a fast refresh sweep and reconciler (extra settings win).
func connStack(t *testing.T, workers int, extra ...string) *stack {
	return newStack(t, workers, append([]string{"SLUICE_OAUTH_REDIRECT_URL=" + connRedirect,
		"SLUICE_CONNECTION_SWEEP_INTERVAL=300ms", "SLUICE_WORKER_RECONCILE_INTERVAL=500ms"}, extra...)...)
}

// noRedirect is an HTTP client that shows redirects instead of following.
var noRedirect = &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// connAuthorize begins an authorization of credID and follows it through
// the provider: it returns the query the provider sent back (code, state).
func connAuthorize(t *testing.T, c *client, credID string) url.Values {
	t.Helper()
	u := str(c.ok(mBeginAuth, map[string]any{"c": credID, "r": connAfter}), "beginAuthorization.url")
	res, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	loc, err := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), connRedirect) {
		t.Fatalf("authorize: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
	return loc.Query()
}

// connCallback calls the stack's /oauth/callback with q and returns the
// status and Location.
func connCallback(t *testing.T, st *stack, q url.Values) (int, string) {
	t.Helper()
	res, err := noRedirect.Get(st.server.url + "/oauth/callback?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Location")
}

func connStatus(t *testing.T, c *client, credID string) map[string]any {
	t.Helper()
	conn, _ := get(c.ok(qConn, map[string]any{"id": credID}), "node.connection").(map[string]any)
	return conn
}

// connWorkflow deploys a workflow whose one http step calls the fake's API
// with credential api.
func connWorkflow(t *testing.T, f *fixture, fake *oauthFake, slug string) string {
	t.Helper()
	def := map[string]any{
		"schemaVersion": 1,
		"steps": []any{map[string]any{"id": "call", "type": "http", "credential": "api",
			"request": map[string]any{"method": "GET", "url": fake.URL + "/api/ping"},
			"retry":   map[string]any{"maxAttempts": 3, "initialInterval": "200ms"}}},
		"output": "steps.call.output.body",
	}
	wf, _ := deployWorkflow(t, f, slug, def)
	return wf
}

func TestConnectionAuthorizationCode(t *testing.T) {
	t.Parallel()
	fake := newOAuthFake(t, time.Hour)
	st := connStack(t, 1)
	f := newFixture(t, "oauth-code")
	owner := f.owner.on(st.server)
	hooks := newScriptServer(t)
	hookEndpoint(t, owner, hooks.URL+"/hooks/all")
	credID := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "api", "t": "oauth2", "s": map[string]any{
		"clientId": fake.clientID, "clientSecret": fake.clientSecret, "authURL": fake.URL + "/authorize",
		"tokenURL": fake.URL + "/token", "scopes": "read write"}}), "createCredential.id")
	if s := str(connStatus(t, owner, credID), "status"); s != "pending_authorization" {
		t.Fatalf("new connection status %q, want pending_authorization", s)
	}

	q := connAuthorize(t, owner, credID)
	if q.Get("code") == "" || !strings.HasPrefix(q.Get("state"), f.tenantID+".") {
		t.Fatalf("provider redirect query: %v", q)
	}
	t.Run("wrong state refused", func(t *testing.T) {
		for _, bad := range []string{f.tenantID + ".not-the-state", "garbage", "", q.Get("state") + "x"} {
			w := url.Values{"code": {q.Get("code")}, "state": {bad}}
			if code, _ := connCallback(t, st, w); code != http.StatusBadRequest {
				t.Errorf("state %q: status %d, want 400", bad, code)
			}
		}
	})
	code, loc := connCallback(t, st, q)
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "http://127.0.0.1:9/after?") || !strings.Contains(loc, "connection=active") || !strings.Contains(loc, "tab=integrations") {
		t.Fatalf("callback: %d %q", code, loc)
	}
	t.Run("reused state refused", func(t *testing.T) {
		if code, _ := connCallback(t, st, q); code != http.StatusBadRequest {
			t.Fatalf("second use of a state: %d, want 400", code)
		}
	})
	t.Run("expired state refused", func(t *testing.T) {
		q2 := connAuthorize(t, owner, credID)
		if _, err := ownerDB(t).Exec(`UPDATE oauth_states SET expires_at = now() - interval '1 second' WHERE tenant_id = $1 AND used_at IS NULL`, f.tenantID); err != nil {
			t.Fatal(err)
		}
		if code, _ := connCallback(t, st, q2); code != http.StatusBadRequest {
			t.Fatalf("expired state: %d, want 400", code)
		}
	})
	conn := connStatus(t, owner, credID)
	if str(conn, "status") != "active" || str(conn, "account") != "ada@example.com" || str(conn, "expiresAt") == "" ||
		fmt.Sprint(conn["grantedScopes"]) != "[read write]" || str(conn, "grant") != "authorization_code" {
		t.Fatalf("connection after callback: %v", conn)
	}

	wf := connWorkflow(t, f, fake, "oauth-code")
	id := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed")
	if str(run, "status") != "succeeded" {
		t.Fatalf("run: %v", run)
	}
	if _, _, _, ok, bad := fake.stats(); ok < 1 || len(bad) > 0 {
		t.Fatalf("API calls: %d valid, refused: %v", ok, bad)
	}
	hookWaitMsgs(t, hooks, "/hooks/all", 1, func(m hookMsg) bool { return m.Type == "run.succeeded" && m.runID() == id })

	t.Run("secrets in no response, log or event", func(t *testing.T) {
		secrets := append(fake.tokenStrings(), fake.clientSecret)
		var seen []string
		seen = append(seen, owner.do(qConn, map[string]any{"id": credID}).Raw, owner.do(qRun, map[string]any{"id": id}).Raw,
			owner.do(`{ auditLogs(first: 100) { edges { node { action targetID metadata } } } }`, nil).Raw,
			st.server.Logs(), allLogs())
		for _, w := range st.workers {
			seen = append(seen, w.Logs())
		}
		for _, m := range hookMsgs(t, hooks, "/hooks/all") {
			seen = append(seen, string(m.Body))
		}
		for _, s := range secrets {
			for i, text := range seen {
				if strings.Contains(text, s) {
					t.Errorf("secret %.8s... found in output %d", s, i)
				}
			}
		}
	})
}

// TestConnectionClientCredentials: a connection with the client credentials
// grant is active from creation and gets its token on first use.
func TestConnectionClientCredentials(t *testing.T) {
	t.Parallel()
	fake := newOAuthFake(t, time.Hour)
	st := connStack(t, 1)
	f := newFixture(t, "oauth-cc")
	owner := f.owner.on(st.server)
	credID := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "api", "t": "oauth2", "s": map[string]any{
		"clientId": fake.clientID, "clientSecret": fake.clientSecret, "tokenURL": fake.URL + "/token", "scopes": "read"}}), "createCredential.id")
	if c := connStatus(t, owner, credID); str(c, "status") != "active" || str(c, "grant") != "client_credentials" {
		t.Fatalf("client credentials connection: %v", c)
	}
	r := owner.fail("VALIDATION", mBeginAuth, map[string]any{"c": credID, "r": connAfter})
	if !hasProblemAt(r, "input.credentialID") {
		t.Errorf("beginAuthorization of a client credentials connection: %s", r.Raw)
	}
	wf := connWorkflow(t, f, fake, "oauth-cc")
	for range 3 {
		id := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
		if run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed", "waiting"); str(run, "status") != "succeeded" {
			t.Fatalf("run: %v", run)
		}
	}
	fake.mu.Lock()
	grants, ok := fake.clientGrants, fake.apiOK
	fake.mu.Unlock()
	// One token for the three runs: the stored one is reused while valid.
	if grants != 1 || ok != 3 {
		t.Fatalf("client credentials grants %d (want 1), valid API calls %d (want 3)", grants, ok)
	}
	if c := connStatus(t, owner, credID); str(c, "expiresAt") == "" || str(c, "lastRefreshedAt") == "" {
		t.Fatalf("connection after use: %v", c)
	}

	t.Run("disabled: runs wait until enabled", func(t *testing.T) {
		const mEnable = `mutation($c: ID!, $on: Boolean!) { setConnectionEnabled(credentialID: $c, enabled: $on) { status } }`
		operator := newClient(t, 0, token(t, f.tenantID, "operator")).on(st.server)
		operator.fail("FORBIDDEN", mEnable, map[string]any{"c": credID, "on": false})
		if s := str(owner.ok(mEnable, map[string]any{"c": credID, "on": false}), "setConnectionEnabled.status"); s != "disabled" {
			t.Fatalf("disabled: %q", s)
		}
		id := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
		waitRun(t, owner, id, 30*time.Second, "waiting")
		if s := str(owner.ok(mEnable, map[string]any{"c": credID, "on": true}), "setConnectionEnabled.status"); s != "active" {
			t.Fatalf("enabled: %q", s)
		}
		if run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed"); str(run, "status") != "succeeded" {
			t.Fatalf("run after enabling: %v", run)
		}
		_, audit := credAudit(owner)
		for _, a := range []string{"credential.connection.disable", "credential.connection.enable"} {
			if audit[a+" "+credID] == nil {
				t.Errorf("no audit entry %s", a)
			}
		}
	})
}

// TestConnectionDegradedAndRestored: a refresh that fails transiently (the
// token endpoint answers 503) moves the connection to degraded with the
// failure counted and credential.expiring sent; the next successful refresh
// makes it active again with credential.restored.
func TestConnectionDegradedAndRestored(t *testing.T) {
	t.Parallel()
	fake := newOAuthFake(t, 2*time.Second)
	st := connStack(t, 1)
	f := newFixture(t, "oauth-degraded")
	owner := f.owner.on(st.server)
	hooks := newScriptServer(t)
	hookEndpoint(t, owner, hooks.URL+"/hooks/cred", "credential.reauthorization_required", "credential.restored", "credential.expiring")
	credID := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "api", "t": "oauth2", "s": map[string]any{
		"clientId": fake.clientID, "clientSecret": fake.clientSecret, "tokenURL": fake.URL + "/token", "refreshToken": fake.newGrant()}}), "createCredential.id")
	wf := connWorkflow(t, f, fake, "oauth-degraded")
	// A first run gets a 2 s token; the sweep refreshes it ahead of expiry.
	id := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	waitRun(t, owner, id, 30*time.Second, "succeeded")

	fake.setDown(true)
	var conn map[string]any
	eventually(t, 30*time.Second, func() (bool, string) {
		conn = connStatus(t, owner, credID)
		return str(conn, "status") == "degraded", fmt.Sprint(conn)
	})
	if get(conn, "consecutiveFailures").(float64) < 1 || !strings.Contains(str(conn, "lastError"), "503") || str(conn, "nextRefreshAt") == "" {
		t.Fatalf("degraded connection: %v", conn)
	}
	hookWaitMsgs(t, hooks, "/hooks/cred", 1, func(m hookMsg) bool { return m.Type == "credential.expiring" })

	fake.setDown(false)
	// A run needs a token: the expired one is refreshed on use.
	eventually(t, 30*time.Second, func() (bool, string) { return fake.allExpired(), "token still valid" })
	id = str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	if run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed"); str(run, "status") != "succeeded" {
		t.Fatalf("run after recovery: %v", run)
	}
	if conn = connStatus(t, owner, credID); str(conn, "status") != "active" || get(conn, "consecutiveFailures") != float64(0) || conn["lastError"] != nil {
		t.Fatalf("recovered connection: %v", conn)
	}
	hookWaitMsgs(t, hooks, "/hooks/cred", 1, func(m hookMsg) bool { return m.Type == "credential.restored" })
	if reused, invalid, _, _, _ := fake.stats(); reused != 0 || invalid != 0 {
		t.Fatalf("reused refresh tokens %d, invalid_grant %d", reused, invalid)
	}
}

// TestConnectionRotationAcrossWorkers: access tokens live 2 s and every
// refresh rotates the refresh token; the runs come in waves, each after the
// last token expired, so that the workers (two of the stack's and the
// suite's) find it expired together and race to refresh it (the stack's
// sweep is off: a 2 s token is always due for it, so it would refresh
// ahead of every wave). Every API call carries a valid token, no
// refresh token is ever presented twice and no invalid_grant happens.
// SLUICE_E2E_OAUTH_RUNS sets the number of runs (default 200).
func TestConnectionRotationAcrossWorkers(t *testing.T) {
	t.Parallel()
	runs, waves := 200, 4
	if v, err := strconv.Atoi(os.Getenv("SLUICE_E2E_OAUTH_RUNS")); err == nil && v > 0 {
		runs = v
	}
	fake := newOAuthFake(t, 2*time.Second)
	st := connStack(t, 2, "SLUICE_CONNECTION_SWEEP_INTERVAL=1h")
	f := newFixture(t, "oauth-rotate")
	owner := f.owner.on(st.server)
	credID := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "api", "t": "oauth2", "s": map[string]any{
		"clientId": fake.clientID, "clientSecret": fake.clientSecret, "tokenURL": fake.URL + "/token", "refreshToken": fake.newGrant()}}), "createCredential.id")
	if s := str(connStatus(t, owner, credID), "status"); s != "active" {
		t.Fatalf("connection with a refresh token: %q, want active", s)
	}
	wf := connWorkflow(t, f, fake, "oauth-rotate")
	start := time.Now()
	var ids []string
	startWave := func(n int) []string {
		var mu sync.Mutex
		var wave []string
		var wg sync.WaitGroup
		errc := make(chan error, n)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := i; j < n; j += 8 {
					d, err := owner.tryOK(mStartRun, map[string]any{"w": wf, "e": f.envID})
					if err != nil {
						errc <- err
						return
					}
					mu.Lock()
					wave = append(wave, str(d, "startRun.id"))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		return wave
	}
	for w := range waves {
		if w > 0 {
			// The last token issued has expired: the wave starts on an
			// expired token.
			eventually(t, 30*time.Second, func() (bool, string) {
				return fake.allExpired(), "the provider's last token is still valid"
			})
		}
		wave := startWave(runs/waves + min(1, max(0, runs%waves-w)))
		for _, id := range wave {
			run := waitRun(t, owner, id, 120*time.Second, "succeeded", "failed", "waiting")
			if str(run, "status") != "succeeded" {
				reused, invalid, refreshes, ok, bad := fake.stats()
				t.Fatalf("run %s: %v\nconnection: %v\nprovider: %d reused refresh tokens, %d invalid_grant, %d refreshes, %d valid calls, refused calls %v",
					id, run, connStatus(t, owner, credID), reused, invalid, refreshes, ok, bad)
			}
		}
		ids = append(ids, wave...)
	}
	took := time.Since(start)
	reused, invalid, refreshes, ok, bad := fake.stats()
	t.Logf("%d runs in %d waves in %s: %d valid API calls, %d refreshes (rotations), %d reused refresh tokens, %d invalid_grant",
		len(ids), waves, took.Round(time.Millisecond), ok, refreshes, reused, invalid)
	if reused != 0 || invalid != 0 {
		t.Errorf("refresh tokens presented twice: %d, invalid_grant answers: %d", reused, invalid)
	}
	if len(bad) > 0 {
		t.Errorf("%d API calls carried a token that was not valid: %v", len(bad), bad[:min(len(bad), 5)])
	}
	if len(ids) != runs || ok < runs || refreshes < waves {
		t.Errorf("runs %d of %d, valid API calls %d, refreshes %d (want at least one per wave)", len(ids), runs, ok, refreshes)
	}
	if conn := connStatus(t, owner, credID); str(conn, "status") != "active" || get(conn, "consecutiveFailures") != float64(0) {
		t.Errorf("connection after the runs: %v", conn)
	}
}

// TestConnectionRevokedRunsWait: once the provider revokes the grant, runs
// that need the connection wait (run.waiting with reason credential), one
// credential.reauthorization_required webhook is sent; after authorizing
// again the waiting runs finish by themselves. A run whose wait times out
// fails with class credential.
func TestConnectionRevokedRunsWait(t *testing.T) {
	t.Parallel()
	fake := newOAuthFake(t, time.Hour)
	st := connStack(t, 1)
	f := newFixture(t, "oauth-revoke")
	owner := f.owner.on(st.server)
	hooks := newScriptServer(t)
	hookEndpoint(t, owner, hooks.URL+"/hooks/cred", "credential.reauthorization_required", "credential.restored", "credential.expiring")
	credID := str(owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "api", "t": "oauth2", "s": map[string]any{
		"clientId": fake.clientID, "clientSecret": fake.clientSecret, "authURL": fake.URL + "/authorize",
		"tokenURL": fake.URL + "/token", "refreshToken": fake.newGrant()}}), "createCredential.id")
	wf := connWorkflow(t, f, fake, "oauth-revoke")
	startRun := func() string {
		return str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	}
	first := startRun()
	if run := waitRun(t, owner, first, 30*time.Second, "succeeded", "failed"); str(run, "status") != "succeeded" {
		t.Fatalf("first run: %v", run)
	}

	fake.revokeAll()
	var waiting []string
	for range 3 {
		waiting = append(waiting, startRun())
	}
	for _, id := range waiting {
		run := waitRun(t, owner, id, 30*time.Second, "waiting", "failed", "succeeded")
		if str(run, "status") != "waiting" || str(stepOf(run, "call"), "status") != "waiting" {
			t.Fatalf("run %s after the revocation: %v", id, run)
		}
		found := false
		for _, ev := range run["events"].([]any) {
			if str(ev, "type") == "run.waiting" && str(ev, "data.reason") == "credential" {
				found = true
			}
		}
		if !found {
			t.Fatalf("run %s has no run.waiting with reason credential: %v", id, eventTypes(run))
		}
	}
	if s := str(connStatus(t, owner, credID), "status"); s != "reauthorization_required" {
		t.Fatalf("connection after the revocation: %q", s)
	}
	hookWaitMsgs(t, hooks, "/hooks/cred", 1, func(m hookMsg) bool { return m.Type == "credential.reauthorization_required" })
	// Every run has reached its wait: a second announcement would have
	// been recorded by now, in the transaction of a transition.
	if ds := hookDeliveries(t, owner, map[string]any{"eventType": "credential.reauthorization_required"}); len(ds) != 1 {
		t.Fatalf("credential.reauthorization_required deliveries: %d, want 1", len(ds))
	}

	t.Run("timeout fails with class credential", func(t *testing.T) {
		id := startRun()
		waitRun(t, owner, id, 30*time.Second, "waiting")
		db := ownerDB(t)
		// The wait's deadline passes: its instants move back.
		if _, err := db.Exec(`UPDATE credential_waits SET expires_at = now() - interval '1 second' WHERE run_id = $1`, id); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(`UPDATE step_runs SET ready_at = now() - interval '10 minutes' WHERE run_id = $1 AND status = 'waiting'`, id); err != nil {
			t.Fatal(err)
		}
		run := waitRun(t, owner, id, 30*time.Second, "failed")
		if str(run, "error.class") != "credential" {
			t.Fatalf("timed out run: %v", run)
		}
	})

	q := connAuthorize(t, owner, credID)
	if code, loc := connCallback(t, st, q); code != http.StatusSeeOther || !strings.Contains(loc, "connection=active") {
		t.Fatalf("callback: %d %q", code, loc)
	}
	for _, id := range waiting {
		if run := waitRun(t, owner, id, 30*time.Second, "succeeded", "failed"); str(run, "status") != "succeeded" {
			t.Fatalf("run %s after authorizing again: %v", id, run)
		}
	}
	hookWaitMsgs(t, hooks, "/hooks/cred", 1, func(m hookMsg) bool { return m.Type == "credential.restored" })
	for _, m := range hookMsgs(t, hooks, "/hooks/cred") {
		if str(m.Data, "credentialID") != credID {
			t.Errorf("%s names %q", m.Type, str(m.Data, "credentialID"))
		}
		for _, s := range append(fake.tokenStrings(), fake.clientSecret) {
			if strings.Contains(string(m.Body), s) {
				t.Errorf("%s carries a secret", m.Type)
			}
		}
	}
}

// TestConnectionIsolationAndBadInput: another tenant's connection and
// authorization state are unreachable; bad provider settings and redirects
// are refused with VALIDATION and the field path, nothing written.
func TestConnectionIsolationAndBadInput(t *testing.T) {
	t.Parallel()
	fake := newOAuthFake(t, time.Hour)
	st := connStack(t, 0)
	a := newFixture(t, "oauth-iso-a")
	b := newFixture(t, "oauth-iso-b")
	ownerA, ownerB := a.owner.on(st.server), b.owner.on(st.server)
	secret := map[string]any{"clientId": fake.clientID, "clientSecret": fake.clientSecret, "authURL": fake.URL + "/authorize", "tokenURL": fake.URL + "/token"}
	credA := str(ownerA.ok(mCreateCred, map[string]any{"e": a.envID, "n": "api", "t": "oauth2", "s": secret}), "createCredential.id")

	t.Run("another tenant's connection", func(t *testing.T) {
		if d := ownerB.ok(qConn, map[string]any{"id": credA}); get(d, "node") != nil {
			t.Fatalf("tenant B reads A's credential: %v", d)
		}
		ownerB.fail("NOT_FOUND", mBeginAuth, map[string]any{"c": credA, "r": connAfter})
	})
	t.Run("another tenant's state", func(t *testing.T) {
		q := connAuthorize(t, ownerA, credA)
		_, rest, _ := strings.Cut(q.Get("state"), ".")
		moved := url.Values{"code": {q.Get("code")}, "state": {b.tenantID + "." + rest}}
		if code, _ := connCallback(t, st, moved); code != http.StatusBadRequest {
			t.Fatalf("A's state under B's tenant: %d, want 400", code)
		}
		if s := str(connStatus(t, ownerA, credA), "status"); s != "pending_authorization" {
			t.Fatalf("A's connection: %q", s)
		}
	})
	t.Run("bad input", func(t *testing.T) {
		before := credCount(ownerA)
		cases := []struct {
			name  string
			patch map[string]any
			path  string
		}{
			{"token URL", map[string]any{"tokenURL": "not a url"}, "input.secret.tokenURL"},
			{"token URL scheme", map[string]any{"tokenURL": "ftp://example.com/token"}, "input.secret.tokenURL"},
			{"auth URL", map[string]any{"authURL": "//nohost"}, "input.secret.authURL"},
			{"provider", map[string]any{"provider": "myspace"}, "input.secret.provider"},
			{"grant", map[string]any{"grant": "password"}, "input.secret.grant"},
			{"extra params", map[string]any{"extraParams": "state=mine"}, "input.secret.extraParams"},
		}
		for _, tc := range cases {
			s := map[string]any{}
			for k, v := range secret {
				s[k] = v
			}
			for k, v := range tc.patch {
				s[k] = v
			}
			r := ownerA.fail("VALIDATION", mCreateCred, map[string]any{"e": a.envID, "n": "bad", "t": "oauth2", "s": s})
			if !hasProblemAt(r, tc.path) {
				t.Errorf("%s: no problem at %s: %s", tc.name, tc.path, r.Raw)
			}
		}
		r := ownerA.fail("VALIDATION", mBeginAuth, map[string]any{"c": credA, "r": "javascript:alert(1)"})
		if !hasProblemAt(r, "input.redirectAfter") {
			t.Errorf("redirectAfter: %s", r.Raw)
		}
		if n := credCount(ownerA); n != before {
			t.Errorf("credentials: %d before, %d after refused input", before, n)
		}
		var states, conns int
		db := ownerDB(t)
		if err := db.QueryRow(`SELECT count(*) FROM oauth_states WHERE tenant_id = $1`, a.tenantID).Scan(&states); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT count(*) FROM connections WHERE tenant_id = $1`, a.tenantID).Scan(&conns); err != nil {
			t.Fatal(err)
		}
		if states != 1 || conns != 1 {
			t.Errorf("rows after refused input: %d states (want 1), %d connections (want 1)", states, conns)
		}
	})
}

// TestConnectionProductionRequiresHTTPS: with SLUICE_ENV=production,
// provider URLs and redirectAfter must be https: VALIDATION with the path,
// nothing written.
func TestConnectionProductionRequiresHTTPS(t *testing.T) {
	t.Parallel()
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	st := newStack(t, 0, "SLUICE_ENV=production", "SLUICE_MASTER_KEYS=prod1:"+base64.StdEncoding.EncodeToString(key),
		"SLUICE_MASTER_KEY_ID=prod1", "SLUICE_OAUTH_REDIRECT_URL=https://sluice.example.com/oauth/callback",
		"SLUICE_EXPORT_URL_SECRET=production-export-url-secret-of-32-bytes-or-more")
	f := newFixture(t, "oauth-prod")
	owner := f.owner.on(st.server)
	before := credCount(owner)
	cases := []struct {
		secret map[string]any
		path   string
	}{
		{map[string]any{"clientId": "c", "clientSecret": "s", "tokenURL": "http://provider.example.com/token"}, "input.secret.tokenURL"},
		{map[string]any{"clientId": "c", "clientSecret": "s", "tokenURL": "https://provider.example.com/token", "authURL": "http://provider.example.com/auth"}, "input.secret.authURL"},
	}
	for _, tc := range cases {
		r := owner.fail("VALIDATION", mCreateCred, map[string]any{"e": f.envID, "n": "prod", "t": "oauth2", "s": tc.secret})
		if !hasProblemAt(r, tc.path) || !strings.Contains(r.Raw, "https") {
			t.Errorf("%s: %s", tc.path, r.Raw)
		}
	}
	if r := owner.fail("VALIDATION", mBeginAuth, map[string]any{"c": f.credentialID, "r": "http://app.example.com/after"}); !hasProblemAt(r, "input.redirectAfter") {
		t.Errorf("http redirectAfter: %s", r.Raw)
	}
	if n := credCount(owner); n != before {
		t.Errorf("credentials: %d before, %d after", before, n)
	}
	var conns int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM connections WHERE tenant_id = $1`, f.tenantID).Scan(&conns); err != nil || conns != 0 {
		t.Errorf("connections written: %d (%v)", conns, err)
	}
}
