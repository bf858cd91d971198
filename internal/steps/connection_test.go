package steps_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/sluicehq/sluice/internal/steps"
)

// fakeTokens is a connection that hands out token-1, then token-2 once
// token-1 is rejected, or needs authorization.
type fakeTokens struct {
	mu       sync.Mutex
	current  string
	rejected []string
	dead     bool
}

func (f *fakeTokens) AccessToken(_ context.Context, rejected string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dead {
		return "", steps.ErrNeedsAuthorization
	}
	if rejected != "" {
		f.rejected = append(f.rejected, rejected)
		if rejected == f.current {
			f.current = "token-2"
		}
	}
	return f.current, nil
}

// apiWanting answers 401 unless the bearer token is want, and records the
// tokens it saw.
func apiWanting(t *testing.T, want string) (string, func() []string) {
	var mu sync.Mutex
	var seen []string
	url := server(t, func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		seen = append(seen, tok)
		mu.Unlock()
		if tok != want {
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_token"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	}).URL
	return url, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), seen...) }
}

func TestConnectionTokenRefreshedOnceOn401(t *testing.T) {
	api, seen := apiWanting(t, "token-2")
	tokens := &fakeTokens{current: "token-1"}
	cred := &steps.Credential{Type: "oauth2", Secret: map[string]any{"clientId": "c", "clientSecret": "s"}, Tokens: tokens}
	res, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+api+`"}}`), Credential: cred})
	if err != nil {
		t.Fatalf("HTTP: %v", err)
	}
	if got := seen(); len(got) != 2 || got[0] != "token-1" || got[1] != "token-2" {
		t.Fatalf("API saw %v, want token-1 then token-2", got)
	}
	if len(tokens.rejected) != 1 || tokens.rejected[0] != "token-1" || len(res.Calls) != 2 {
		t.Fatalf("rejected %v, calls %d", tokens.rejected, len(res.Calls))
	}
	if b, _ := json.Marshal(res); strings.Contains(string(b), "token-") {
		t.Errorf("a token is recorded: %s", b)
	}
}

func TestConnectionTokenNoResendAtMostOnce(t *testing.T) {
	api, seen := apiWanting(t, "token-2")
	tokens := &fakeTokens{current: "token-1"}
	cred := &steps.Credential{Type: "oauth2", Secret: map[string]any{}, Tokens: tokens}
	_, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step:       step(t, `{"id":"s","type":"http","sideEffect":true,"request":{"method":"POST","url":"`+api+`"}}`),
		Credential: cred, BeforeSend: func(context.Context) error { return nil }})
	if err == nil || len(seen()) != 1 {
		t.Fatalf("at_most_once step: err %v, API saw %v (want one send)", err, seen())
	}
}

func TestConnectionNeedsAuthorization(t *testing.T) {
	api, seen := apiWanting(t, "token-1")
	cred := &steps.Credential{Type: "oauth2", Secret: map[string]any{}, Tokens: &fakeTokens{dead: true}}
	_, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+api+`"}}`), Credential: cred})
	e := stepError(t, err)
	if e.Class != steps.CredentialClass || !e.NotSent || len(seen()) != 0 {
		t.Fatalf("error %+v, API saw %v", e, seen())
	}
}
