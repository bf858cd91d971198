package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/sluicehq/sluice/internal/secrets"
)

// Credential types.
const (
	CredentialBearer    = "bearer"    // token
	CredentialBasic     = "basic"     // username, password
	CredentialHeader    = "header"    // name, value
	CredentialOpenAI    = "openai"    // apiKey, baseURL?, organization?
	CredentialAnthropic = "anthropic" // apiKey, baseURL?
	CredentialOAuth2    = "oauth2"    // clientId, clientSecret, tokenURL, refreshToken?, accessToken?, scopes?
)

// Credential is a decrypted credential as the run state machine hands it to an
// executor. Secret holds the fields listed for its Type.
type Credential struct {
	Type   string
	Secret map[string]any
	// Tokens, when set, is the oauth2 credential's connection, which
	// gives its access tokens (connection.go); the secret's own token
	// fields are then not used.
	Tokens TokenSource
}

func (c *Credential) field(name string) string {
	s, _ := c.Secret[name].(string)
	return s
}

// require reports the first missing field by name only, never a value.
func (c *Credential) require(names ...string) *Error {
	for _, n := range names {
		if c.field(n) == "" {
			return newError(Permanent, "%s credential is missing %q", c.Type, n)
		}
	}
	return nil
}

// scopes accepts a JSON list or a space- or comma-separated string.
func (c *Credential) scopes() []string {
	switch v := c.Secret["scopes"].(type) {
	case []string:
		return v
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
		return out
	case string:
		return strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' })
	}
	return nil
}

// newRedactor scrubs the credential's secret values and extra values
// obtained at run time such as an OAuth access token.
func newRedactor(c *Credential, extra ...string) *secrets.Redactor {
	return secrets.NewRedactor(append(secretValues(c), extra...)...)
}

// newRedactorFor scrubs the secrets of every credential a step uses (an
// llm step's own and its fallbacks').
func newRedactorFor(creds ...*Credential) *secrets.Redactor {
	var values []string
	for _, c := range creds {
		values = append(values, secretValues(c)...)
	}
	return secrets.NewRedactor(values...)
}

// secretValues are a credential's secret values and forms of them that
// the Redactor cannot derive by itself (the user:password pair that Basic
// auth base64-encodes); none for nil.
func secretValues(c *Credential) []string {
	if c == nil {
		return nil
	}
	values := secrets.SecretStrings(c.Secret)
	if c.Type == CredentialBasic {
		values = append(values, c.field("username")+":"+c.field("password"))
	}
	return values
}

// authorize injects the credential into an http step's request. It returns
// secret values obtained on the way (an OAuth access token) that must be
// redacted too.
func (x *Executor) authorize(ctx context.Context, c *Credential, req *http.Request) ([]string, *Error) {
	if c == nil {
		return nil, nil
	}
	switch c.Type {
	case CredentialBearer:
		if e := c.require("token"); e != nil {
			return nil, e
		}
		req.Header.Set("Authorization", "Bearer "+c.field("token"))
	case CredentialBasic:
		if e := c.require("username"); e != nil {
			return nil, e
		}
		req.SetBasicAuth(c.field("username"), c.field("password"))
	case CredentialHeader:
		if e := c.require("name", "value"); e != nil {
			return nil, e
		}
		req.Header.Set(c.field("name"), c.field("value"))
	case CredentialOpenAI:
		if e := c.require("apiKey"); e != nil {
			return nil, e
		}
		req.Header.Set("Authorization", "Bearer "+c.field("apiKey"))
		if org := c.field("organization"); org != "" {
			req.Header.Set("OpenAI-Organization", org)
		}
	case CredentialAnthropic:
		if e := c.require("apiKey"); e != nil {
			return nil, e
		}
		req.Header.Set("x-api-key", c.field("apiKey"))
		req.Header.Set("anthropic-version", anthropicVersion)
	case CredentialOAuth2:
		token, e := x.oauthToken(ctx, c, "")
		if e != nil {
			return nil, e
		}
		req.Header.Set("Authorization", "Bearer "+token)
		return []string{token}, nil
	default:
		return nil, newError(Permanent, "unsupported credential type %q", c.Type)
	}
	return nil, nil
}

// oauthToken is the access token of an oauth2 credential: from its
// connection when it has one, else from the in-memory cache.
func (x *Executor) oauthToken(ctx context.Context, c *Credential, rejected string) (string, *Error) {
	if c.Tokens != nil {
		return connectionToken(ctx, c, rejected)
	}
	return x.tokens.accessToken(ctx, x.client, c)
}

// tokenCache keeps OAuth access tokens between attempts and steps so that
// every call does not cost a token request, and keeps rotated refresh
// tokens, which some providers issue on each refresh and which invalidate
// the previous one. It lives in memory only: after a restart the refresh
// token stored in the vault is used again.
type tokenCache struct {
	mu      sync.Mutex
	entries map[string]*tokenEntry
}

type tokenEntry struct {
	mu  sync.Mutex // held while fetching, so concurrent steps refresh once
	tok *oauth2.Token
}

// maxCachedTokens bounds the cache; past it the cache starts over.
const maxCachedTokens = 10_000

// unknownExpiry is how long a token whose response carried no expires_in
// is reused: oauth2 would otherwise treat it as valid forever.
const unknownExpiry = 5 * time.Minute

func (tc *tokenCache) entry(key string) *tokenEntry {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.entries == nil || len(tc.entries) >= maxCachedTokens {
		tc.entries = map[string]*tokenEntry{}
	}
	e, ok := tc.entries[key]
	if !ok {
		e = &tokenEntry{}
		tc.entries[key] = e
	}
	return e
}

// forget drops a cached access token (after the API answered 401), keeping
// a rotated refresh token.
func (tc *tokenCache) forget(c *Credential) {
	e := tc.entry(oauthCacheKey(c))
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.tok != nil {
		e.tok = &oauth2.Token{RefreshToken: e.tok.RefreshToken}
	}
}

// oauthCacheKey is a digest of everything that determines the token, so
// two credentials share an entry only if they hold the same secrets.
func oauthCacheKey(c *Credential) string {
	h := sha256.New()
	for _, f := range []string{c.field("tokenURL"), c.field("clientId"), c.field("clientSecret"), c.field("refreshToken"), strings.Join(c.scopes(), " ")} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// accessToken returns a valid access token for an oauth2 credential: the
// refresh-token grant when refreshToken is set, otherwise client
// credentials; a bare accessToken without tokenURL is used as it is. Token
// requests go through the egress client.
func (tc *tokenCache) accessToken(ctx context.Context, client *http.Client, c *Credential) (string, *Error) {
	if c.field("tokenURL") == "" {
		if at := c.field("accessToken"); at != "" {
			return at, nil
		}
		return "", c.require("tokenURL")
	}
	if e := c.require("clientId"); e != nil {
		return "", e
	}
	entry := tc.entry(oauthCacheKey(c))
	entry.mu.Lock()
	defer entry.mu.Unlock()
	if entry.tok.Valid() {
		return entry.tok.AccessToken, nil
	}

	ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	var tok *oauth2.Token
	var err error
	if rt := c.field("refreshToken"); rt != "" {
		if entry.tok != nil && entry.tok.RefreshToken != "" {
			rt = entry.tok.RefreshToken
		}
		conf := &oauth2.Config{
			ClientID:     c.field("clientId"),
			ClientSecret: c.field("clientSecret"),
			Endpoint:     oauth2.Endpoint{TokenURL: c.field("tokenURL")},
			Scopes:       c.scopes(),
		}
		tok, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: rt}).Token()
	} else {
		conf := &clientcredentials.Config{
			ClientID:     c.field("clientId"),
			ClientSecret: c.field("clientSecret"),
			TokenURL:     c.field("tokenURL"),
			Scopes:       c.scopes(),
		}
		tok, err = conf.Token(ctx)
	}
	if err != nil {
		return "", tokenError(ctx, err)
	}
	if tok.Expiry.IsZero() {
		tok.Expiry = time.Now().Add(unknownExpiry)
	}
	entry.tok = tok
	return tok.AccessToken, nil
}

// tokenError classifies a failed token request. The provider's error code
// is kept; its response body is not, since it may echo what was sent.
func tokenError(ctx context.Context, err error) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		e := statusError(re.Response.StatusCode, re.Response.Header, time.Now(), "")
		e.StatusCode = 0 // the status is the token endpoint's, not the step's
		e.Message = "oauth2 token request: " + e.Message
		if re.ErrorCode != "" {
			e.Message += " (" + re.ErrorCode + ")"
		}
		return e
	}
	e := *ctxClassify(ctx, err)
	e.Message = "oauth2 token request: " + e.Message
	return &e
}
