// Package auth turns credentials (JWTs, API keys) into a viewer.
package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is wrapped by every Verify failure. Callers answer 401 on it
// without looking further; the short reason in the message is for logs.
var ErrInvalidToken = errors.New("auth: invalid token")

// Claims is what Sluice reads from a verified bearer token (claims sub, tid,
// roles, exp). Roles are passed through as given; the caller drops names it
// does not know.
type Claims struct {
	Subject   string
	TenantID  string
	Roles     []string
	ExpiresAt time.Time
}

// JWTConfig configures a JWTVerifier. Exactly one of Secret and JWKSURL is
// set.
type JWTConfig struct {
	// Secret is the HS256 key, for development. It must be at least 32 bytes
	// (RFC 7518 section 3.2).
	Secret []byte
	// JWKSURL is the identity provider's JWK Set, for production: RS256,
	// RS384, RS512, ES256, ES384, PS256 and EdDSA keys. It is fetched when
	// the verifier is built, refreshed hourly, and refetched (at most every 5
	// minutes) when a token names an unknown kid. It must be https unless the
	// host is loopback.
	JWKSURL string
	// Issuer must equal the token's iss. Required.
	Issuer string
	// Audience must be one of the token's aud. Required.
	Audience string
	// Leeway is the clock skew allowed on exp, nbf and iat. If zero, 30
	// seconds.
	Leeway time.Duration
}

const (
	defaultLeeway = 30 * time.Second
	// minHS256Secret is RFC 7518's floor: an HMAC key shorter than the hash
	// output is guessable offline from any one token.
	minHS256Secret = 32
	// maxTokenLen bounds the work an unauthenticated request can cause;
	// real tokens, even with many roles, are a few KiB.
	maxTokenLen = 16 << 10
	jwksTimeout = 10 * time.Second
)

var (
	hmacMethods = []string{jwt.SigningMethodHS256.Alg()}
	// HS* is absent on purpose: accepting it next to public keys lets a
	// token "signed" with a public key pass as an HMAC (key confusion).
	jwksMethods = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"}
)

// A JWTVerifier checks bearer tokens. It is safe for concurrent use.
type JWTVerifier struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc
	methods []string
}

// NewJWTVerifier returns a verifier for cfg. With a JWKSURL it fetches the
// key set before returning, so a wrong URL fails at startup rather than on
// the first request; ctx then bounds the background refresh, so cancel it at
// shutdown.
func NewJWTVerifier(ctx context.Context, cfg JWTConfig) (*JWTVerifier, error) {
	switch {
	case len(cfg.Secret) > 0 && cfg.JWKSURL != "":
		return nil, errors.New("auth: jwt: set either a secret or a JWKS URL, not both")
	case len(cfg.Secret) == 0 && cfg.JWKSURL == "":
		return nil, errors.New("auth: jwt: set a secret or a JWKS URL")
	case cfg.Issuer == "":
		return nil, errors.New("auth: jwt: issuer is required")
	case cfg.Audience == "":
		return nil, errors.New("auth: jwt: audience is required")
	case cfg.Leeway < 0:
		return nil, errors.New("auth: jwt: leeway is negative")
	}
	leeway := cfg.Leeway
	if leeway == 0 {
		leeway = defaultLeeway
	}

	v := &JWTVerifier{}
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < minHS256Secret {
			return nil, fmt.Errorf("auth: jwt: secret is %d bytes, want at least %d", len(cfg.Secret), minHS256Secret)
		}
		secret := slices.Clone(cfg.Secret)
		v.methods = hmacMethods
		v.keyfunc = func(t *jwt.Token) (any, error) {
			if t.Method != jwt.SigningMethodHS256 {
				return nil, errors.New("unexpected signing method")
			}
			return secret, nil
		}
	} else {
		kf, err := fetchJWKS(ctx, cfg.JWKSURL)
		if err != nil {
			return nil, err
		}
		v.methods = jwksMethods
		v.keyfunc = kf
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(v.methods),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
	)
	return v, nil
}

func fetchJWKS(ctx context.Context, rawURL string) (_ jwt.Keyfunc, err error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, errors.New("auth: jwt: JWKS URL is not an absolute URL")
	}
	// Whoever can alter the key set in transit can mint any token, so
	// plain HTTP is only for a provider on this machine (tests, dev).
	if u.Scheme != "https" && (u.Scheme != "http" || !isLoopback(u.Hostname())) {
		return nil, fmt.Errorf("auth: jwt: JWKS URL must be https (http only for loopback), got scheme %q", u.Scheme)
	}

	// On success the refresh goroutine lives as long as ctx; on failure it
	// is stopped here rather than left polling a URL nobody will use.
	refreshCtx, stop := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			stop()
		}
	}()
	failFast := false
	kf, err := keyfunc.NewDefaultOverrideCtx(refreshCtx, []string{rawURL}, keyfunc.Override{
		Client:                    &http.Client{Timeout: jwksTimeout},
		HTTPTimeout:               jwksTimeout,
		NoErrorReturnFirstHTTPReq: &failFast,
	})
	if err != nil {
		return nil, fmt.Errorf("auth: jwt: fetch JWKS: %w", err)
	}
	keys, err := kf.Storage().KeyReadAll(refreshCtx)
	if err == nil && len(keys) == 0 {
		err = errors.New("no supported keys")
	}
	if err != nil {
		return nil, fmt.Errorf("auth: jwt: JWKS at %s: %w", rawURL, err)
	}
	// Rebuilt only to refuse keys published for encryption ("use":"enc");
	// keys without "use" are the common case and stay allowed.
	kf, err = keyfunc.New(keyfunc.Options{
		Ctx:          refreshCtx,
		Storage:      kf.Storage(),
		UseWhitelist: []jwkset.USE{jwkset.UseSig, ""},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: jwt: %w", err)
	}
	return kf.Keyfunc, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tokenClaims is the wire shape. Roles are pointers so a null entry is told
// apart from a string and refused.
type tokenClaims struct {
	jwt.RegisteredClaims
	TenantID string    `json:"tid"`
	Roles    []*string `json:"roles"`
}

// UnmarshalJSON refuses exp, nbf and iat that are not JSON numbers: jwt's
// NumericDate also reads "1767225600" (a string), which RFC 7519 does not
// allow and which other verifiers may read differently.
func (c *tokenClaims) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for _, name := range []string{"exp", "nbf", "iat"} {
		v, ok := raw[name]
		if !ok {
			continue
		}
		v = bytes.TrimSpace(v)
		if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
			return &json.UnmarshalTypeError{Value: "non-number", Field: name, Type: reflect.TypeFor[jwt.NumericDate]()}
		}
	}
	type plain tokenClaims // without this method
	return json.Unmarshal(b, (*plain)(c))
}

// Verify checks token's signature, algorithm, issuer, audience, expiry and
// issue time, and returns its claims. Every failure wraps ErrInvalidToken
// with a short reason that never quotes the token or its header.
func (v *JWTVerifier) Verify(token string) (Claims, error) {
	if len(token) > maxTokenLen {
		return Claims{}, invalid("too long", nil)
	}
	var c tokenClaims
	parsed, err := v.parser.ParseWithClaims(token, &c, v.keyfunc)
	if err != nil {
		return Claims{}, invalid(v.reason(parsed, &c, err), err)
	}
	if c.Subject == "" {
		return Claims{}, invalid("missing sub", nil)
	}
	if c.TenantID == "" {
		return Claims{}, invalid("missing tid", nil)
	}
	roles := make([]string, 0, len(c.Roles))
	for _, r := range c.Roles {
		if r == nil {
			return Claims{}, invalid("roles must be a list of strings", nil)
		}
		roles = append(roles, *r)
	}
	return Claims{
		Subject:   c.Subject,
		TenantID:  c.TenantID,
		Roles:     roles,
		ExpiresAt: c.ExpiresAt.UTC(), // WithExpirationRequired guarantees exp
	}, nil
}

// reason names the first failure in the order jwt checks them. c is read only
// for claims failures, which jwt reports after the signature has verified.
func (v *JWTVerifier) reason(parsed *jwt.Token, c *tokenClaims, err error) string {
	var typeErr *json.UnmarshalTypeError
	switch {
	case parsed != nil && parsed.Method != nil && !slices.Contains(v.methods, parsed.Method.Alg()):
		return "algorithm not allowed"
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return "claim " + typeErr.Field + " has the wrong type"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwkset.ErrKeyNotFound):
		return "unknown signing key"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unverifiable"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.ExpiresAt == nil:
		return "missing exp"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && c.Issuer == "":
		return "missing iss"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "missing aud"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "issued in the future"
	default:
		return "rejected"
	}
}

// tokenError keeps the library error reachable through errors.Is (to tell
// "expired" apart, say) while its message stays the short reason: library
// messages quote header values such as kid and alg, which an attacker picks.
type tokenError struct {
	reason string
	cause  error
}

func invalid(reason string, cause error) error { return &tokenError{reason: reason, cause: cause} }

func (e *tokenError) Error() string { return ErrInvalidToken.Error() + ": " + e.reason }

func (e *tokenError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalidToken}
	}
	return []error{ErrInvalidToken, e.cause}
}

// MintHS256 issues a development token for c.Subject, c.TenantID and c.Roles,
// valid for ttl from now (c.ExpiresAt is ignored). It refuses what Verify
// would refuse, so a minted token always works against the same config.
func MintHS256(secret []byte, issuer, audience string, c Claims, ttl time.Duration) (string, error) {
	switch {
	case len(secret) < minHS256Secret:
		return "", fmt.Errorf("auth: mint: secret is %d bytes, want at least %d", len(secret), minHS256Secret)
	case issuer == "" || audience == "":
		return "", errors.New("auth: mint: issuer and audience are required")
	case c.Subject == "" || c.TenantID == "":
		return "", errors.New("auth: mint: subject and tenant id are required")
	case ttl <= 0:
		return "", errors.New("auth: mint: ttl must be positive")
	}
	now := time.Now()
	roles := make([]*string, len(c.Roles))
	for i := range c.Roles {
		roles[i] = &c.Roles[i]
	}
	claims := tokenClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    issuer,
			Audience:  jwt.ClaimStrings{audience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		TenantID: c.TenantID,
		Roles:    roles,
	}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: mint: %w", err)
	}
	return signed, nil
}
