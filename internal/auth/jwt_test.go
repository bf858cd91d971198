package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://idp.example.test/"
	testAudience = "sluice"
)

var testSecret = []byte("development-secret-0123456789abcdef")

// idp is an identity provider serving a JWK Set over HTTP, the way a
// production verifier sees one.
type idp struct {
	rsaKey   *rsa.PrivateKey
	edKey    ed25519.PrivateKey
	encKey   *ecdsa.PrivateKey // published with "use":"enc"
	url      string
	requests atomic.Int32
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	encKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{rsaKey: rsaKey, edKey: edKey, encKey: encKey}

	store := jwkset.NewMemoryStorage()
	for _, k := range []struct {
		key  any
		meta jwkset.JWKMetadataOptions
	}{
		{&rsaKey.PublicKey, jwkset.JWKMetadataOptions{KID: "rsa-1", ALG: jwkset.AlgRS256, USE: jwkset.UseSig}},
		{edKey.Public(), jwkset.JWKMetadataOptions{KID: "ed-1"}},
		{&encKey.PublicKey, jwkset.JWKMetadataOptions{KID: "ec-enc", USE: jwkset.UseEnc}},
	} {
		jwk, err := jwkset.NewJWKFromKey(k.key, jwkset.JWKOptions{Metadata: k.meta})
		if err != nil {
			t.Fatal(err)
		}
		if err := store.KeyWrite(context.Background(), jwk); err != nil {
			t.Fatal(err)
		}
	}
	body, err := store.JSONPublic(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL + "/.well-known/jwks.json"
	return p
}

func newVerifier(t *testing.T, cfg JWTConfig) *JWTVerifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cfg.Issuer, cfg.Audience = testIssuer, testAudience
	v, err := NewJWTVerifier(ctx, cfg)
	if err != nil {
		t.Fatalf("NewJWTVerifier: %v", err)
	}
	return v
}

// claims returns valid claims with edits applied; an edit setting a value to
// nil deletes the claim.
func claims(edits map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"sub":   "user-1",
		"tid":   "tenant-1",
		"roles": []string{"admin", "operator"},
		"iss":   testIssuer,
		"aud":   testAudience,
		"iat":   now.Unix(),
		"exp":   now.Add(5 * time.Minute).Unix(),
	}
	for k, v := range edits {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyValid(t *testing.T) {
	p := newIDP(t)
	hs := newVerifier(t, JWTConfig{Secret: testSecret})
	jwks := newVerifier(t, JWTConfig{JWKSURL: p.url})

	tests := map[string]struct {
		v     *JWTVerifier
		token string
	}{
		"HS256":                 {hs, sign(t, jwt.SigningMethodHS256, "", testSecret, claims(nil))},
		"RS256 from JWKS":       {jwks, sign(t, jwt.SigningMethodRS256, "rsa-1", p.rsaKey, claims(nil))},
		"EdDSA from JWKS":       {jwks, sign(t, jwt.SigningMethodEdDSA, "ed-1", p.edKey, claims(nil))},
		"EdDSA without kid":     {jwks, sign(t, jwt.SigningMethodEdDSA, "", p.edKey, claims(nil))},
		"audience among others": {hs, sign(t, jwt.SigningMethodHS256, "", testSecret, claims(map[string]any{"aud": []string{"other", testAudience}}))},
		"expired within leeway": {hs, sign(t, jwt.SigningMethodHS256, "", testSecret, claims(map[string]any{"exp": time.Now().Add(-10 * time.Second).Unix()}))},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := tt.v.Verify(tt.token)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != "user-1" || got.TenantID != "tenant-1" || !reflect.DeepEqual(got.Roles, []string{"admin", "operator"}) {
				t.Fatalf("claims = %+v", got)
			}
			if got.ExpiresAt.IsZero() || got.ExpiresAt.Location() != time.UTC {
				t.Fatalf("ExpiresAt = %v, want a UTC time", got.ExpiresAt)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	p := newIDP(t)
	hs := newVerifier(t, JWTConfig{Secret: testSecret})
	jwks := newVerifier(t, JWTConfig{JWKSURL: p.url})

	rsaPub, err := x509.MarshalPKIXPublicKey(&p.rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	_, strangerKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hour := time.Hour
	now := time.Now()
	hsToken := func(edits map[string]any) string {
		return sign(t, jwt.SigningMethodHS256, "", testSecret, claims(edits))
	}
	const hostileKID = `kid-"<script>` // must never reach the error message

	tests := []struct {
		name   string
		v      *JWTVerifier
		token  string
		reason string
	}{
		{"alg none (HS verifier)", hs, sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, claims(nil)), "algorithm not allowed"},
		{"alg none (JWKS verifier)", jwks, sign(t, jwt.SigningMethodNone, "rsa-1", jwt.UnsafeAllowNoneSignatureType, claims(nil)), "algorithm not allowed"},
		{"HS256 signed with the RSA public key", jwks, sign(t, jwt.SigningMethodHS256, "rsa-1", rsaPEM, claims(nil)), "algorithm not allowed"},
		{"RS256 on the HS verifier", hs, sign(t, jwt.SigningMethodRS256, "rsa-1", p.rsaKey, claims(nil)), "algorithm not allowed"},
		{"wrong issuer", hs, hsToken(map[string]any{"iss": "https://evil.example/"}), "wrong issuer"},
		{"missing issuer", hs, hsToken(map[string]any{"iss": nil}), "missing iss"},
		{"wrong audience", hs, hsToken(map[string]any{"aud": "someone-else"}), "wrong audience"},
		{"missing audience", hs, hsToken(map[string]any{"aud": nil}), "missing aud"},
		{"no exp", hs, hsToken(map[string]any{"exp": nil}), "missing exp"},
		{"expired", hs, hsToken(map[string]any{"exp": now.Add(-hour).Unix(), "iat": now.Add(-2 * hour).Unix()}), "expired"},
		{"issued in the future", hs, hsToken(map[string]any{"iat": now.Add(hour).Unix(), "exp": now.Add(2 * hour).Unix()}), "issued in the future"},
		{"not valid yet", hs, hsToken(map[string]any{"nbf": now.Add(hour).Unix()}), "not valid yet"},
		{"bad signature (HS)", hs, sign(t, jwt.SigningMethodHS256, "", []byte("another-secret-0123456789abcdefgh"), claims(nil)), "bad signature"},
		{"bad signature (known kid)", jwks, sign(t, jwt.SigningMethodEdDSA, "ed-1", strangerKey, claims(nil)), "bad signature"},
		{"unknown kid", jwks, sign(t, jwt.SigningMethodEdDSA, hostileKID, strangerKey, claims(nil)), "unknown signing key"},
		{"key published for encryption", jwks, sign(t, jwt.SigningMethodES256, "ec-enc", p.encKey, claims(nil)), "unverifiable"},
		{"missing tid", hs, hsToken(map[string]any{"tid": nil}), "missing tid"},
		{"empty tid", hs, hsToken(map[string]any{"tid": ""}), "missing tid"},
		{"missing sub", hs, hsToken(map[string]any{"sub": nil}), "missing sub"},
		{"tid not a string", hs, hsToken(map[string]any{"tid": 42}), "claim tid has the wrong type"},
		{"roles not a list", hs, hsToken(map[string]any{"roles": "admin"}), "claim roles has the wrong type"},
		{"roles with a number", hs, hsToken(map[string]any{"roles": []any{"admin", 7}}), "claim roles"},
		{"exp as a string", hs, hsToken(map[string]any{"exp": strconv.FormatInt(now.Add(hour).Unix(), 10)}), "claim exp has the wrong type"},
		{"nbf as a string", hs, hsToken(map[string]any{"nbf": strconv.FormatInt(now.Unix(), 10)}), "claim nbf has the wrong type"},
		{"iat as a string", hs, hsToken(map[string]any{"iat": strconv.FormatInt(now.Unix(), 10)}), "claim iat has the wrong type"},
		{"roles with null", hs, hsToken(map[string]any{"roles": []any{"admin", nil}}), "roles must be a list of strings"},
		{"garbage", hs, "not-a-jwt", "malformed"},
		{"empty", hs, "", "malformed"},
		{"too long", hs, strings.Repeat("a", maxTokenLen+1), "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.v.Verify(tt.token)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("err = %v, want ErrInvalidToken", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("err = %q, want reason %q", err, tt.reason)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Fatal("error echoes the token")
			}
			if strings.Contains(err.Error(), hostileKID) {
				t.Fatal("error echoes the kid")
			}
			if !reflect.DeepEqual(got, Claims{}) {
				t.Fatalf("returned claims %+v alongside the error", got)
			}
		})
	}
}

func TestVerifyKeepsCause(t *testing.T) {
	v := newVerifier(t, JWTConfig{Secret: testSecret})
	now := time.Now()
	_, err := v.Verify(sign(t, jwt.SigningMethodHS256, "", testSecret, claims(map[string]any{"exp": now.Add(-time.Hour).Unix(), "iat": now.Add(-2 * time.Hour).Unix()})))
	if !errors.Is(err, ErrInvalidToken) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("err = %v, want both ErrInvalidToken and jwt.ErrTokenExpired", err)
	}
}

func TestUnknownKIDRefetchesJWKS(t *testing.T) {
	p := newIDP(t)
	v := newVerifier(t, JWTConfig{JWKSURL: p.url})
	before := p.requests.Load()
	_, stranger, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodEdDSA, "rotated-in", stranger, claims(nil))); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("err = %v, want ErrInvalidToken", err)
	}
	if got := p.requests.Load(); got != before+1 {
		t.Fatalf("JWKS fetched %d times for an unknown kid, want 1", got-before)
	}
}

func TestNewJWTVerifierBadConfig(t *testing.T) {
	p := newIDP(t)
	empty := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer empty.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	tests := []struct {
		name string
		cfg  JWTConfig
		want string
	}{
		{"neither", JWTConfig{Issuer: testIssuer, Audience: testAudience}, "set a secret or a JWKS URL"},
		{"both", JWTConfig{Secret: testSecret, JWKSURL: p.url, Issuer: testIssuer, Audience: testAudience}, "not both"},
		{"no issuer", JWTConfig{Secret: testSecret, Audience: testAudience}, "issuer is required"},
		{"no audience", JWTConfig{Secret: testSecret, Issuer: testIssuer}, "audience is required"},
		{"negative leeway", JWTConfig{Secret: testSecret, Issuer: testIssuer, Audience: testAudience, Leeway: -time.Second}, "leeway"},
		{"short secret", JWTConfig{Secret: []byte("dev"), Issuer: testIssuer, Audience: testAudience}, "at least 32"},
		{"relative JWKS URL", JWTConfig{JWKSURL: "/jwks.json", Issuer: testIssuer, Audience: testAudience}, "absolute URL"},
		{"plain http off-host", JWTConfig{JWKSURL: "http://idp.example.com/jwks.json", Issuer: testIssuer, Audience: testAudience}, "must be https"},
		{"JWKS unreachable", JWTConfig{JWKSURL: down.URL, Issuer: testIssuer, Audience: testAudience}, "fetch JWKS"},
		{"JWKS without keys", JWTConfig{JWKSURL: empty.URL, Issuer: testIssuer, Audience: testAudience}, "no supported keys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := NewJWTVerifier(context.Background(), tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tt.want)
			}
			if v != nil {
				t.Fatal("returned a verifier alongside the error")
			}
			if strings.Contains(err.Error(), string(testSecret)) {
				t.Fatal("error leaks the secret")
			}
		})
	}
}

func TestMintHS256(t *testing.T) {
	v := newVerifier(t, JWTConfig{Secret: testSecret})
	want := Claims{Subject: "dev@example.com", TenantID: "tenant-9", Roles: []string{"owner"}}
	token, err := MintHS256(testSecret, testIssuer, testAudience, want, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Verify(token)
	if err != nil {
		t.Fatalf("Verify(minted): %v", err)
	}
	if got.Subject != want.Subject || got.TenantID != want.TenantID || !reflect.DeepEqual(got.Roles, want.Roles) {
		t.Fatalf("claims = %+v, want %+v", got, want)
	}
	if d := time.Until(got.ExpiresAt); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("expires in %v, want about an hour", d)
	}

	bad := []struct {
		name     string
		secret   []byte
		iss, aud string
		c        Claims
		ttl      time.Duration
	}{
		{"short secret", []byte("dev"), testIssuer, testAudience, want, time.Hour},
		{"no issuer", testSecret, "", testAudience, want, time.Hour},
		{"no audience", testSecret, testIssuer, "", want, time.Hour},
		{"no subject", testSecret, testIssuer, testAudience, Claims{TenantID: "t"}, time.Hour},
		{"no tenant", testSecret, testIssuer, testAudience, Claims{Subject: "s"}, time.Hour},
		{"zero ttl", testSecret, testIssuer, testAudience, want, 0},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if tok, err := MintHS256(tt.secret, tt.iss, tt.aud, tt.c, tt.ttl); err == nil || tok != "" {
				t.Fatalf("MintHS256 = %q, %v; want an error and no token", tok, err)
			}
		})
	}
}
