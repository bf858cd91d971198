package connections

import (
	"golang.org/x/oauth2"

	"net/url"
	"sort"
	"strings"

	"github.com/sluicehq/sluice/internal/errs"
)

// Grants a connection uses.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantClientCredentials = "client_credentials"
)

// Statuses of a connection.
const (
	StatusPending     = "pending_authorization"
	StatusActive      = "active"
	StatusDegraded    = "degraded"
	StatusReauthorize = "reauthorization_required"
	StatusDisabled    = "disabled"
)

// SecretFields are the optional string fields an oauth2 credential's
// secret may hold besides clientId and clientSecret (control checks the
// shape, Validate the values).
var SecretFields = []string{"provider", "grant", "authURL", "tokenURL", "scopes", "extraParams", "refreshToken", "accessToken", "expiry"}

// Settings are a connection's provider settings, read from its oauth2
// credential's secret (the client id and secret stay sealed there).
type Settings struct {
	Provider    string
	Grant       string
	AuthURL     string
	TokenURL    string
	Scopes      []string
	ExtraParams map[string]string
	// ScopeSeparator joins scopes in requests (a preset's).
	ScopeSeparator string
	ClientID       string
	ClientSecret   string
	RefreshToken   string
}

func field(secret map[string]any, k string) string {
	s, _ := secret[k].(string)
	return strings.TrimSpace(s)
}

// ParseSettings reads the settings of an oauth2 secret, filling what its
// preset gives, and reports every problem at path (the secret's field
// path, e.g. "input.secret"). requireHTTPS refuses http URLs (production).
func ParseSettings(secret map[string]any, path string, requireHTTPS bool) (Settings, error) {
	st := Settings{
		Provider: field(secret, "provider"), Grant: field(secret, "grant"),
		AuthURL: field(secret, "authURL"), TokenURL: field(secret, "tokenURL"),
		ClientID: field(secret, "clientId"), ClientSecret: field(secret, "clientSecret"),
		RefreshToken: field(secret, "refreshToken"),
	}
	st.Scopes = strings.FieldsFunc(field(secret, "scopes"), func(r rune) bool { return r == ' ' || r == ',' })
	var problems []errs.Problem
	bad := func(k, msg string) { problems = append(problems, errs.Problem{Path: path + "." + k, Message: msg}) }
	if st.Provider != "" {
		p, ok := Presets[st.Provider]
		if !ok {
			names := make([]string, 0, len(Presets))
			for n := range Presets {
				names = append(names, n)
			}
			sort.Strings(names)
			bad("provider", "must be one of "+strings.Join(names, ", "))
		} else {
			if st.AuthURL == "" {
				st.AuthURL = p.AuthURL
			}
			if st.TokenURL == "" {
				st.TokenURL = p.TokenURL
			}
			if len(st.Scopes) == 0 {
				st.Scopes = p.Scopes
			}
			st.ScopeSeparator = p.ScopeSeparator
			for k, v := range p.ExtraParams {
				if st.ExtraParams == nil {
					st.ExtraParams = map[string]string{}
				}
				st.ExtraParams[k] = v
			}
		}
	}
	if raw := field(secret, "extraParams"); raw != "" {
		q, err := url.ParseQuery(raw)
		if err != nil {
			bad("extraParams", "must be URL query parameters (a=1&b=2)")
		}
		for k := range q {
			switch k {
			case "state", "code_challenge", "code_challenge_method", "redirect_uri", "client_id", "response_type", "scope":
				bad("extraParams", "may not set "+k+": Sluice sets it")
			}
			if st.ExtraParams == nil {
				st.ExtraParams = map[string]string{}
			}
			st.ExtraParams[k] = q.Get(k)
		}
	}
	switch st.Grant {
	case "":
		st.Grant = GrantClientCredentials
		if st.AuthURL != "" || st.RefreshToken != "" {
			st.Grant = GrantAuthorizationCode
		}
	case GrantAuthorizationCode, GrantClientCredentials:
	default:
		bad("grant", "must be authorization_code or client_credentials")
	}
	if st.TokenURL == "" {
		bad("tokenURL", "is required (or a provider that has one)")
	} else if msg := checkURL(st.TokenURL, requireHTTPS); msg != "" {
		bad("tokenURL", msg)
	}
	if st.AuthURL != "" {
		if msg := checkURL(st.AuthURL, requireHTTPS); msg != "" {
			bad("authURL", msg)
		}
	} else if st.Grant == GrantAuthorizationCode && st.RefreshToken == "" {
		bad("authURL", "is required for the authorization_code grant (or a provider that has one)")
	}
	if len(problems) > 0 {
		return st, errs.InvalidAll("invalid oauth2 provider settings", problems)
	}
	return st, nil
}

// checkURL returns why u is not a usable provider URL, or "".
func checkURL(raw string, requireHTTPS bool) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return "must be an absolute http(s) URL"
	}
	if u.User != nil {
		return "must not carry user information"
	}
	if u.Fragment != "" {
		return "must not have a fragment"
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && !requireHTTPS:
	case u.Scheme == "http":
		return "must be https in production"
	default:
		return "must be an absolute http(s) URL"
	}
	return ""
}

// checkRedirect returns why redirectAfter is not a place to send the user
// back to, or "".
func checkRedirect(raw string, requireHTTPS bool) string {
	if raw == "" {
		return "is required"
	}
	if len(raw) > 2048 {
		return "must be at most 2048 characters"
	}
	return checkURL(raw, requireHTTPS)
}

// scopeParam is the scopes as the oauth2 package sends them (joined by a
// space, or by the preset's separator as one value).
func (st Settings) scopeParam() []string {
	if st.ScopeSeparator != "" && len(st.Scopes) > 0 {
		return []string{strings.Join(st.Scopes, st.ScopeSeparator)}
	}
	return st.Scopes
}

// config is the oauth2 configuration for the authorization code grant.
func (st Settings) config(redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: st.ClientID, ClientSecret: st.ClientSecret, RedirectURL: redirectURL, Scopes: st.scopeParam(),
		Endpoint: oauth2.Endpoint{AuthURL: st.AuthURL, TokenURL: st.TokenURL, AuthStyle: oauth2.AuthStyleInParams},
	}
}
