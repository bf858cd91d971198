package steps_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/internal/steps"
)

// tokenEndpoint is a fake OAuth token endpoint accepting one client and,
// for the refresh grant, one refresh token.
func tokenEndpoint(t *testing.T, hits *atomic.Int32, wantGrant string) string {
	return server(t, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		r.ParseForm()
		id, secret, ok := r.BasicAuth()
		if !ok {
			id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		if id != "client-1" || secret != "client-secret-1" {
			writeJSON(w, 401, map[string]any{"error": "invalid_client"})
			return
		}
		if g := r.PostForm.Get("grant_type"); g != wantGrant {
			writeJSON(w, 400, map[string]any{"error": "unsupported_grant_type"})
			return
		}
		if wantGrant == "refresh_token" && r.PostForm.Get("refresh_token") != "refresh-token-1" {
			writeJSON(w, 400, map[string]any{"error": "invalid_grant"})
			return
		}
		writeJSON(w, 200, map[string]any{"access_token": "access-token-" + wantGrant, "token_type": "Bearer", "expires_in": 3600})
	}).URL
}

func apiEchoingAuth(t *testing.T) (url string, lastAuth *atomic.Value) {
	lastAuth = &atomic.Value{}
	url = server(t, func(w http.ResponseWriter, r *http.Request) {
		lastAuth.Store(r.Header.Get("Authorization"))
		json.NewEncoder(w).Encode(map[string]any{"seen": r.Header.Get("Authorization")})
	}).URL
	return url, lastAuth
}

func TestOAuth2RefreshFlow(t *testing.T) {
	var hits atomic.Int32
	tokenURL := tokenEndpoint(t, &hits, "refresh_token")
	api, lastAuth := apiEchoingAuth(t)
	cred := &steps.Credential{Type: "oauth2", Secret: map[string]any{
		"clientId": "client-1", "clientSecret": "client-secret-1", "tokenURL": tokenURL,
		"refreshToken": "refresh-token-1", "scopes": []any{"tickets.read"},
	}}
	x := newExecutor()
	for i := range 2 {
		res, err := x.HTTP(context.Background(), steps.Request{
			Step:       step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+api+`"}}`),
			Credential: cred,
		})
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := lastAuth.Load(); got != "Bearer access-token-refresh_token" {
			t.Fatalf("Authorization = %v", got)
		}
		// The fetched access token is a secret too.
		if b, _ := json.Marshal(res); strings.Contains(string(b), "access-token-") {
			t.Errorf("access token recorded: %s", b)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("token endpoint hit %d times, want 1 (token reused)", n)
	}
}

func TestOAuth2ClientCredentials(t *testing.T) {
	var hits atomic.Int32
	tokenURL := tokenEndpoint(t, &hits, "client_credentials")
	api, lastAuth := apiEchoingAuth(t)
	_, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+api+`"}}`),
		Credential: &steps.Credential{Type: "oauth2", Secret: map[string]any{
			"clientId": "client-1", "clientSecret": "client-secret-1", "tokenURL": tokenURL, "scopes": "a b",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := lastAuth.Load(); got != "Bearer access-token-client_credentials" {
		t.Fatalf("Authorization = %v", got)
	}
}

func TestOAuth2RejectedGrantIsPermanent(t *testing.T) {
	var hits atomic.Int32
	tokenURL := tokenEndpoint(t, &hits, "refresh_token")
	_, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"http://127.0.0.1:1/"}}`),
		Credential: &steps.Credential{Type: "oauth2", Secret: map[string]any{
			"clientId": "client-1", "clientSecret": "client-secret-1", "tokenURL": tokenURL, "refreshToken": "revoked-refresh-token",
		}},
	})
	e := stepError(t, err)
	if e.Class != steps.Permanent || !strings.Contains(e.Message, "invalid_grant") {
		t.Errorf("error = %+v", e)
	}
	if strings.Contains(e.Message, "revoked-refresh-token") || strings.Contains(e.Message, "client-secret-1") {
		t.Errorf("secret in message: %q", e.Message)
	}
}
