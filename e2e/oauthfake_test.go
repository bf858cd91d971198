package e2e

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// oauthFake is an OAuth2 provider on loopback with an API behind it: it
// issues authorization codes (PKCE S256 checked), access tokens that
// expire after ttl and refresh tokens that rotate on every use (the old one
// is dead at once), revokes grants, and records what it saw: a refresh
// token presented twice, invalid_grant answers, API calls with a token
// that was not valid.
type oauthFake struct {
	*httptest.Server
	clientID, clientSecret string
	ttl                    time.Duration
	// leeway: how long past its advertised expiry the API still accepts a
	// token (real providers allow some clock skew).
	leeway time.Duration

	mu        sync.Mutex
	codes     map[string]fakeCode
	refresh   map[string]*fakeRefresh // every refresh token ever issued
	access    map[string]fakeAccess
	revoked   map[string]bool // grant ids
	grants    int
	reused    int // refresh tokens presented again after use
	invalid   int // invalid_grant answers
	refreshes int // successful refresh-token grants
	exchanges int // successful code exchanges
	// clientGrants: tokens issued by the client credentials grant
	clientGrants int
	// down: the token endpoint answers 503 (setDown)
	down   bool
	apiOK  int
	apiBad []string // why API calls were refused
}

type fakeCode struct {
	challenge, redirectURI, grant string
	used                          bool
}

type fakeRefresh struct {
	grant string
	used  bool
}

type fakeAccess struct {
	grant  string
	expiry time.Time
}

func newOAuthFake(t *testing.T, ttl time.Duration) *oauthFake {
	f := &oauthFake{clientID: "client-" + randHex(4), clientSecret: "client-secret-" + randHex(12), ttl: ttl, leeway: 2 * time.Second,
		codes: map[string]fakeCode{}, refresh: map[string]*fakeRefresh{}, access: map[string]fakeAccess{}, revoked: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /authorize", f.authorize)
	mux.HandleFunc("POST /token", f.token)
	mux.HandleFunc("/api/", f.api)
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// newGrant issues a grant directly and returns its refresh token (as if
// authorized out of band).
func (f *oauthFake) newGrant() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.grants++
	g := "grant-" + randHex(6)
	rt := "rt-" + randHex(16)
	f.refresh[rt] = &fakeRefresh{grant: g}
	return rt
}

// setDown makes the token endpoint answer 503 (or work again).
func (f *oauthFake) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// revokeAll revokes every grant issued so far.
func (f *oauthFake) revokeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.refresh {
		f.revoked[r.grant] = true
	}
	for _, c := range f.codes {
		f.revoked[c.grant] = true
	}
}

func (f *oauthFake) stats() (reused, invalid, refreshes, apiOK int, apiBad []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reused, f.invalid, f.refreshes, f.apiOK, append([]string(nil), f.apiBad...)
}

// allExpired reports whether every access token issued has passed its
// advertised expiry.
func (f *oauthFake) allExpired() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.access {
		if time.Now().Before(a.expiry) {
			return false
		}
	}
	return true
}

// tokenStrings is every token the fake issued (to look for leaks).
func (f *oauthFake) tokenStrings() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.refresh {
		out = append(out, k)
	}
	for k := range f.access {
		out = append(out, k)
	}
	return out
}

func (f *oauthFake) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != f.clientID || q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" {
		http.Error(w, "bad authorize request", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.grants++
	code := "code-" + randHex(8)
	f.codes[code] = fakeCode{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), grant: "grant-" + randHex(6)}
	f.mu.Unlock()
	u, _ := url.Parse(q.Get("redirect_uri"))
	rq := u.Query()
	rq.Set("code", code)
	rq.Set("state", q.Get("state"))
	u.RawQuery = rq.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

func (f *oauthFake) fail(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": code})
}

// issue answers with a new access and refresh token of grant (locked).
func (f *oauthFake) issue(w http.ResponseWriter, grant string) {
	at, rt := "at-"+randHex(16), "rt-"+randHex(16)
	f.access[at] = fakeAccess{grant: grant, expiry: time.Now().Add(f.ttl)}
	f.refresh[rt] = &fakeRefresh{grant: grant}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "refresh_token": rt, "token_type": "Bearer",
		"expires_in": int(f.ttl / time.Second), "scope": "read write", "account": "ada@example.com"})
}

func (f *oauthFake) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		f.fail(w, 400, "invalid_request")
		return
	}
	if r.PostForm.Get("client_id") != f.clientID || r.PostForm.Get("client_secret") != f.clientSecret {
		f.fail(w, 401, "invalid_client")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.fail(w, http.StatusServiceUnavailable, "temporarily_unavailable")
		return
	}
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		c, ok := f.codes[r.PostForm.Get("code")]
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || c.used || c.redirectURI != r.PostForm.Get("redirect_uri") || base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
			f.invalid++
			f.fail(w, 400, "invalid_grant")
			return
		}
		c.used = true
		f.codes[r.PostForm.Get("code")] = c
		f.exchanges++
		f.issue(w, c.grant)
	case "refresh_token":
		rt, ok := f.refresh[r.PostForm.Get("refresh_token")]
		switch {
		case !ok:
			f.invalid++
			f.fail(w, 400, "invalid_grant")
		case rt.used:
			f.reused++
			f.invalid++
			f.fail(w, 400, "invalid_grant")
		case f.revoked[rt.grant]:
			rt.used = true
			f.invalid++
			f.fail(w, 400, "invalid_grant")
		default:
			rt.used = true
			f.refreshes++
			f.issue(w, rt.grant)
		}
	case "client_credentials":
		f.clientGrants++
		at := "at-" + randHex(16)
		f.access[at] = fakeAccess{grant: "client", expiry: time.Now().Add(f.ttl)}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(f.ttl / time.Second)})
	default:
		f.fail(w, 400, "unsupported_grant_type")
	}
}

// api is the provider's API: it wants a valid bearer token.
func (f *oauthFake) api(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.mu.Lock()
	a, ok := f.access[tok]
	why := ""
	switch {
	case !ok:
		why = "unknown token"
	case f.revoked[a.grant]:
		why = "revoked"
	case time.Now().After(a.expiry.Add(f.leeway)):
		why = "expired " + time.Since(a.expiry).String() + " ago"
	}
	revoked := ok && f.revoked[a.grant]
	if why == "" {
		f.apiOK++
	} else if !revoked {
		f.apiBad = append(f.apiBad, why)
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if why != "" {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_token"})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "path": r.URL.Path})
}
