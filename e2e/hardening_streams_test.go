package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/sluicehq/sluice/internal/auth"
)

// Live streams (websocket and SSE) end when the credential that opened them
// ends: at a JWT's expiry, and when an API key is revoked (on any API
// process). Websockets close with 4401; SSE streams send a last UNAUTHENTICATED
// error and end.

// tokenTTL mints a JWT valid for ttl.
func tokenTTL(t *testing.T, tenantID string, ttl time.Duration, roles ...string) (string, time.Time) {
	t.Helper()
	tok, err := auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience,
		auth.Claims{Subject: "user-ttl@e2e.test", TenantID: tenantID, Roles: roles}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	var c jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &c); err != nil || c.ExpiresAt == nil {
		t.Fatalf("minted token: %v", err)
	}
	return tok, c.ExpiresAt.Time // whole seconds, as the server reads it
}

// parkedDefinition waits an hour on its only step: its runEvents stream
// replays a few stored events, then stays open.
func parkedDefinition() map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "wait", "type": "delay", "duration": "1h"},
	}}
}

// sseFrame is one server-sent event.
type sseFrame struct {
	Event string
	Data  string
}

// sseStream is a GraphQL subscription over SSE, read frame by frame.
type sseStream struct {
	frames chan sseFrame // closed when the response body ends
	err    error         // why it ended; read after frames is closed
	cancel context.CancelFunc
}

func openSSE(t *testing.T, p *process, tok, query string, vars map[string]any) *sseStream {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.url+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("SSE: status %d: %s", resp.StatusCode, b)
	}
	s := &sseStream{frames: make(chan sseFrame, 64), cancel: cancel}
	go func() {
		defer close(s.frames)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var f sseFrame
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if f.Event != "" || f.Data != "" {
					s.frames <- f
				}
				f = sseFrame{}
			case strings.HasPrefix(line, "event: "):
				f.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				f.Data += strings.TrimPrefix(line, "data: ")
			}
		}
		s.err = sc.Err()
		if s.err == nil {
			s.err = io.EOF
		}
	}()
	return s
}

// next returns the next frame, or io.EOF once the stream has ended.
func (s *sseStream) next(ctx context.Context) (sseFrame, error) {
	select {
	case f, ok := <-s.frames:
		if !ok {
			return sseFrame{}, s.err
		}
		return f, nil
	case <-ctx.Done():
		return sseFrame{}, ctx.Err()
	}
}

// sseAwaitEvent reads until the first runEvents frame: the stream is live.
func sseAwaitEvent(t *testing.T, s *sseStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	for {
		f, err := s.next(ctx)
		if err != nil {
			t.Fatalf("SSE ended before its first event: %v", err)
		}
		if f.Event == "next" && strings.Contains(f.Data, `"seq"`) {
			return
		}
	}
}

// sseAwaitUnauthenticated reads until the stream ends within d, and wants
// an UNAUTHENTICATED error as its last data frame; it returns when the
// stream ended.
func sseAwaitUnauthenticated(t *testing.T, s *sseStream, d time.Duration) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var lastData string
	for {
		f, err := s.next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SSE stream still open after %s (last frame %s): %v", d, lastData, err)
		}
		if f.Event == "next" {
			lastData = f.Data
		}
	}
	ended := time.Now()
	var p struct {
		Errors []gqlError `json:"errors"`
	}
	_ = json.Unmarshal([]byte(lastData), &p)
	if len(p.Errors) == 0 || p.Errors[0].Extensions["code"] != "UNAUTHENTICATED" {
		t.Fatalf("SSE stream ended without an UNAUTHENTICATED error; last frame: %s", lastData)
	}
	return ended
}

// wsAwaitEvent reads subscription id until its first frame.
func wsAwaitEvent(t *testing.T, w *wsClient, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	f, err := w.next(ctx, id)
	if err != nil || f.Type != "next" || len(f.Errors) > 0 {
		t.Fatalf("first frame of %s: %+v %v", id, f, err)
	}
}

// wsAwaitClose reads until the connection closes within d and returns its
// close code and when it closed.
func wsAwaitClose(t *testing.T, w *wsClient, d time.Duration) (websocket.StatusCode, time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		_, err := w.read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatalf("websocket still open after %s", d)
		}
		return websocket.CloseStatus(err), time.Now()
	}
}

func TestLiveWebsocketClosesWith4401AtTokenExpiry(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "exp-ws", parkedDefinition())
	runID := lt.start(t)
	tok, exp := tokenTTL(t, lt.tenantID, 4*time.Second, "viewer")
	w := connectWS(t, server(0), wsBearer(tok))
	w.subscribe("e", sRunEvents, map[string]any{"id": runID})
	wsAwaitEvent(t, w, "e")
	code, at := wsAwaitClose(t, w, 30*time.Second)
	if code != 4401 {
		t.Fatalf("close code %d at expiry, want 4401", code)
	}
	if at.Before(exp) {
		t.Fatalf("closed at %s, before the token's expiry %s", at, exp)
	}
}

func TestLiveSSEEndsAtTokenExpiry(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "exp-sse", parkedDefinition())
	runID := lt.start(t)
	tok, exp := tokenTTL(t, lt.tenantID, 4*time.Second, "viewer")
	s := openSSE(t, server(1), tok, sRunEvents, map[string]any{"id": runID})
	sseAwaitEvent(t, s)
	if ended := sseAwaitUnauthenticated(t, s, 30*time.Second); ended.Before(exp) {
		t.Fatalf("SSE ended at %s, before the token's expiry %s", ended, exp)
	}
}

// TestLiveStreamsEndWhenAPIKeyRevoked revokes a key through one API process
// while a websocket and an SSE stream opened with it run on the other.
func TestLiveStreamsEndWhenAPIKeyRevoked(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "revoke-live", parkedDefinition())
	runID := lt.start(t)
	key := lt.owner.ok(mCreateKey, map[string]any{"n": "live", "r": []string{"VIEWER"}})
	keyID, keyToken := str(key, "createAPIKey.apiKey.id"), str(key, "createAPIKey.token")

	w := connectWS(t, server(1), wsBearer(keyToken))
	w.subscribe("e", sRunEvents, map[string]any{"id": runID})
	wsAwaitEvent(t, w, "e")
	w.subscribe("u", sRunUpdated, nil)
	s := openSSE(t, server(1), keyToken, sRunEvents, map[string]any{"id": runID})
	sseAwaitEvent(t, s)
	// A second API-key websocket, idle (no subscription), ends too.
	idle := connectWS(t, server(1), wsBearer(keyToken))

	revoked := time.Now()
	lt.owner.on(server(0)).ok(mRevokeKey, map[string]any{"id": keyID})

	if code, at := wsAwaitClose(t, w, 20*time.Second); code != 4401 {
		t.Fatalf("websocket closed with %d after revocation, want 4401", code)
	} else {
		t.Logf("websocket closed %s after the revocation", at.Sub(revoked).Round(time.Millisecond))
	}
	if code, _ := wsAwaitClose(t, idle, 20*time.Second); code != 4401 {
		t.Fatalf("idle websocket closed with %d after revocation, want 4401", code)
	}
	ended := sseAwaitUnauthenticated(t, s, 20*time.Second)
	t.Logf("SSE ended %s after the revocation", ended.Sub(revoked).Round(time.Millisecond))
	// The key opens nothing any more.
	if got := wsCloseCode(t, wsBearer(keyToken)); got != 4401 {
		t.Fatalf("revoked key: close code %d, want 4401", got)
	}
}

// TestLiveStreamEndsWhenRevocationMessageLost revokes a key behind Sluice's
// back (no revocation message is published): the API process finds it when
// it re-reads the keys of its open streams (every 30s).
func TestLiveStreamEndsWhenRevocationMessageLost(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "revoke-lost", parkedDefinition())
	runID := lt.start(t)
	key := lt.owner.ok(mCreateKey, map[string]any{"n": "live", "r": []string{"VIEWER"}})
	keyID, keyToken := str(key, "createAPIKey.apiKey.id"), str(key, "createAPIKey.token")
	w := connectWS(t, server(0), wsBearer(keyToken))
	w.subscribe("e", sRunEvents, map[string]any{"id": runID})
	wsAwaitEvent(t, w, "e")
	if _, err := ownerDB(t).Exec(`UPDATE api_keys SET revoked_at = now() WHERE id = $1`, keyID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	code, at := wsAwaitClose(t, w, 90*time.Second)
	if code != 4401 {
		t.Fatalf("close code %d, want 4401", code)
	}
	t.Logf("websocket closed %s after the silent revocation", at.Sub(revoked).Round(time.Millisecond))
}

// TestLiveStreamEndsAtAPIKeyExpiry: a key's expiresAt ends its streams like
// a JWT's exp.
func TestLiveStreamEndsAtAPIKeyExpiry(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "key-exp", parkedDefinition())
	runID := lt.start(t)
	expires := time.Now().Add(4 * time.Second).UTC().Truncate(time.Microsecond) // as Postgres stores it
	key := lt.owner.ok(`mutation($e: Time!) { createAPIKey(input: {name: "short", roles: [VIEWER], expiresAt: $e}) { token } }`,
		map[string]any{"e": expires.Format(time.RFC3339Nano)})
	s := openSSE(t, server(1), str(key, "createAPIKey.token"), sRunEvents, map[string]any{"id": runID})
	sseAwaitEvent(t, s)
	if ended := sseAwaitUnauthenticated(t, s, 30*time.Second); ended.Before(expires) {
		t.Fatalf("SSE ended at %s, before the key's expiry %s", ended, expires)
	}
}
