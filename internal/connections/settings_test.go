package connections

import (
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/errs"
)

func problemsOf(t *testing.T, err error) map[string]string {
	t.Helper()
	e, ok := errs.As(err)
	if !ok || e.Code != errs.Validation {
		t.Fatalf("want VALIDATION, got %v", err)
	}
	out := map[string]string{}
	for _, p := range e.Problems {
		out[p.Path] = p.Message
	}
	return out
}

func TestParseSettingsPreset(t *testing.T) {
	st, err := ParseSettings(map[string]any{"clientId": "id", "clientSecret": "s", "provider": "google", "scopes": "a b", "extraParams": "login_hint=x"}, "input.secret", true)
	if err != nil {
		t.Fatal(err)
	}
	if st.AuthURL != Presets["google"].AuthURL || st.TokenURL != Presets["google"].TokenURL || st.Grant != GrantAuthorizationCode {
		t.Fatalf("preset not applied: %+v", st)
	}
	if st.ExtraParams["access_type"] != "offline" || st.ExtraParams["login_hint"] != "x" || strings.Join(st.Scopes, " ") != "a b" {
		t.Fatalf("params and scopes: %+v", st)
	}
	slack, err := ParseSettings(map[string]any{"provider": "slack", "scopes": "chat:write,channels:read"}, "s", true)
	if err != nil || len(slack.scopeParam()) != 1 || slack.scopeParam()[0] != "chat:write,channels:read" {
		t.Fatalf("slack scopes: %v %v", slack.scopeParam(), err)
	}
}

func TestParseSettingsGrants(t *testing.T) {
	cc, err := ParseSettings(map[string]any{"tokenURL": "https://p.example/token"}, "s", true)
	if err != nil || cc.Grant != GrantClientCredentials {
		t.Fatalf("no auth URL, no refresh token: %+v %v", cc, err)
	}
	rt, err := ParseSettings(map[string]any{"tokenURL": "https://p.example/token", "refreshToken": "r"}, "s", true)
	if err != nil || rt.Grant != GrantAuthorizationCode {
		t.Fatalf("refresh token: %+v %v", rt, err)
	}
	_, err = ParseSettings(map[string]any{"tokenURL": "https://p.example/token", "grant": "authorization_code"}, "s", true)
	if p := problemsOf(t, err); p["s.authURL"] == "" {
		t.Fatalf("authorization code without auth URL: %v", p)
	}
}

func TestParseSettingsRefusesBadURLs(t *testing.T) {
	_, err := ParseSettings(map[string]any{"tokenURL": "http://p.example/token", "authURL": "http://p.example/auth"}, "input.secret", true)
	p := problemsOf(t, err)
	if !strings.Contains(p["input.secret.tokenURL"], "https") || !strings.Contains(p["input.secret.authURL"], "https") {
		t.Fatalf("http in production: %v", p)
	}
	if _, err := ParseSettings(map[string]any{"tokenURL": "http://p.example/token", "authURL": "http://p.example/auth"}, "s", false); err != nil {
		t.Fatalf("http in development: %v", err)
	}
	for _, bad := range []string{"not a url", "ftp://x/y", "https://user:pw@p.example/t", "https://p.example/t#frag", "/relative"} {
		_, err := ParseSettings(map[string]any{"tokenURL": bad}, "s", false)
		if p := problemsOf(t, err); p["s.tokenURL"] == "" {
			t.Errorf("%q accepted: %v", bad, p)
		}
	}
	_, err = ParseSettings(map[string]any{"tokenURL": "https://p.example/t", "provider": "nope", "grant": "password", "extraParams": "state=1"}, "s", true)
	p = problemsOf(t, err)
	for _, k := range []string{"s.provider", "s.grant", "s.extraParams"} {
		if p[k] == "" {
			t.Errorf("no problem at %s: %v", k, p)
		}
	}
	if msg := checkRedirect("javascript:alert(1)", false); msg == "" {
		t.Error("javascript: redirect accepted")
	}
}

func TestNextRefresh(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	cases := []struct {
		name           string
		expiry, issued time.Time
		want           time.Time
	}{
		{"one hour token: 5 min before", now.Add(time.Hour), now, now.Add(55 * time.Minute)},
		{"ten hour token: 5 min before", now.Add(10 * time.Hour), now, now.Add(10*time.Hour - 5*time.Minute)},
		{"ten minute token: 10% before", now.Add(10 * time.Minute), now, now.Add(9 * time.Minute)},
		{"two second token: 10% before", now.Add(2 * time.Second), now, now.Add(1800 * time.Millisecond)},
		{"expired token: now", now.Add(-time.Second), now.Add(-time.Hour), now},
		{"week token: idle bound", now.Add(7 * day), now, now.Add(day)},
		{"no expiry: idle bound", time.Time{}, now, now.Add(day)},
	}
	for _, c := range cases {
		if got := nextRefresh(c.expiry, c.issued, now, day); !got.Equal(c.want) {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestUsable(t *testing.T) {
	now := time.Now()
	issued := now.Add(-time.Second)
	ts := tokenSet{AccessToken: "a", Expiry: now.Add(time.Second)} // lifetime 2s: margin 0.5s
	if !usable(ts, "", &issued, now) || usable(ts, "a", &issued, now) || usable(ts, "", &issued, now.Add(600*time.Millisecond)) {
		t.Fatal("margin or rejected token ignored")
	}
	if !usable(tokenSet{AccessToken: "a"}, "", nil, now) || usable(tokenSet{}, "", nil, now) {
		t.Fatal("no expiry or no token")
	}
}
