package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// authClaims is the token shape an identity provider sends Sluice.
type authClaims struct {
	jwt.RegisteredClaims
	TID   string   `json:"tid,omitempty"`
	Roles []string `json:"roles,omitempty"`
}

// authValidClaims are claims Sluice accepts for tenantID; cases spoil one
// thing each.
func authValidClaims(tenantID string) authClaims {
	now := time.Now()
	return authClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "auth-e2e@e2e.test",
			Issuer:    jwtIssuer,
			Audience:  jwt.ClaimStrings{jwtAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
		TID:   tenantID,
		Roles: []string{"owner"},
	}
}

func authSign(t *testing.T, method jwt.SigningMethod, key any, c authClaims, kid string) string {
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

// authRejected asserts r is a 401 UNAUTHENTICATED with no data.
func authRejected(t *testing.T, what string, r *result) {
	t.Helper()
	if r.Status != http.StatusUnauthorized || r.Code() != "UNAUTHENTICATED" || r.Data != nil || strings.Contains(r.Raw, `"data"`) {
		t.Errorf("%s: want 401 UNAUTHENTICATED and no data, got %d %s", what, r.Status, r.Raw)
	}
}

const authViewerQuery = `{ viewer { tenant { id } subject roles apiKeyID } }`

// TestAuthJWTMatrix sends every kind of bad bearer token; each is refused
// with 401 UNAUTHENTICATED before any resolver runs.
func TestAuthJWTMatrix(t *testing.T) {
	t.Parallel()
	tenantID := newTenant(t, "auth-jwt")
	secret := []byte(jwtSecret)

	// Control: the crafting below makes tokens Sluice accepts when nothing
	// is spoiled, so each refusal is about the one spoiled thing.
	valid := authSign(t, jwt.SigningMethodHS256, secret, authValidClaims(tenantID), "")
	for i := range 2 {
		r := newClient(t, i, valid).do(authViewerQuery, nil)
		if r.Status != http.StatusOK || str(r.Data, "viewer.tenant.id") != tenantID {
			t.Fatalf("control: a valid token is refused: %d %s", r.Status, r.Raw)
		}
	}

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	otherSecret := []byte("another-secret-nobody-configured-0123456789")

	spoil := func(f func(*authClaims)) authClaims {
		c := authValidClaims(tenantID)
		f(&c)
		return c
	}
	cases := []struct{ name, header string }{
		{"alg none", "Bearer " + authSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, authValidClaims(tenantID), "")},
		{"HS256 keyed with a public key", "Bearer " + authSign(t, jwt.SigningMethodHS256, publicPEM, authValidClaims(tenantID), "")},
		{"RS256", "Bearer " + authSign(t, jwt.SigningMethodRS256, rsaKey, authValidClaims(tenantID), "")},
		{"wrong issuer", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.Issuer = "https://evil.example/" }), "")},
		{"no issuer", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.Issuer = "" }), "")},
		{"wrong audience", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.Audience = jwt.ClaimStrings{"someone-else"} }), "")},
		{"no audience", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.Audience = nil }), "")},
		{"no exp", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.ExpiresAt = nil }), "")},
		{"expired", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) {
			c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
		}), "")},
		{"not valid yet", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }), "")},
		{"bad signature", "Bearer " + authSign(t, jwt.SigningMethodHS256, otherSecret, authValidClaims(tenantID), "")},
		{"unknown kid", "Bearer " + authSign(t, jwt.SigningMethodHS256, otherSecret, authValidClaims(tenantID), "rotated-away-2024")},
		{"missing tid", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.TID = "" }), "")},
		{"tid is a slug", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.TID = "acme" }), "")},
		{"tid is another type's id", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.TID = "wf" + tenantID[3:] }), "")},
		{"missing sub", "Bearer " + authSign(t, jwt.SigningMethodHS256, secret, spoil(func(c *authClaims) { c.Subject = "" }), "")},
		{"malformed", "Bearer not-a-jwt"},
		{"malformed three parts", "Bearer a.b.c"},
		{"truncated", "Bearer " + valid[:len(valid)-10]},
		{"empty bearer", "Bearer "},
		{"missing header", ""},
		{"Basic scheme", "Basic " + base64.StdEncoding.EncodeToString([]byte("owner:password"))},
		{"valid token under Basic", "Basic " + valid},
		{"valid token without scheme", valid},
	}
	for i, c := range cases {
		caller := &client{t: t, authorization: c.header} // "" sends no header
		r := caller.on(server(i)).do(authViewerQuery, nil)
		authRejected(t, c.name, r)
		if tok := strings.TrimPrefix(c.header, "Bearer "); len(tok) > 16 && strings.Contains(r.Raw, tok) {
			t.Errorf("%s: the response echoes the token: %s", c.name, r.Raw)
		}
		// Mutations are refused the same way.
		authRejected(t, c.name+" (mutation)", caller.on(server(i+1)).do(`mutation { createWorkflow(input: {name: "x", slug: "x"}) { id } }`, nil))
	}
}

// TestAuthRoles checks each role against the mutations it may and may not
// run, through the API only.
func TestAuthRoles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "auth-roles")
	const (
		mCreateEnv    = `mutation($n: String!) { createEnvironment(input: {name: $n, kind: development}) { id } }`
		mCreateKeyAs  = `mutation($r: [Role!]!) { createAPIKey(input: {name: "k", roles: $r}) { token apiKey { id roles } } }`
		qProdDeploys  = `query($e: ID!) { deployments(where: {environmentID: $e}) { totalCount } }`
		qWorkflowSlug = `query($s: String!) { workflows(where: {slug: $s}) { totalCount } }`
	)

	t.Run("viewer cannot mutate", func(t *testing.T) {
		v := newClient(t, 1, token(t, f.tenantID, "viewer"))
		owner := newClient(t, 0, f.owner.token)
		v.ok(`{ workflows { totalCount } }`, nil) // control: it can read
		slug := "viewer-" + randHex(3)
		v.fail("FORBIDDEN", mCreateWF, map[string]any{"n": "V", "s": slug})
		v.fail("FORBIDDEN", mCreateEnv, map[string]any{"n": "viewer-env"})
		v.fail("FORBIDDEN", mCreateCred, map[string]any{"e": f.envID, "n": "viewer-cred", "t": "bearer", "s": map[string]any{"token": "x"}})
		v.fail("FORBIDDEN", mCreateVer, map[string]any{"w": f.workflowID, "d": simpleDefinition()})
		v.fail("FORBIDDEN", mPublish, map[string]any{"id": f.draftID})
		v.fail("FORBIDDEN", mRevokeKey, map[string]any{"id": f.apiKeyID})
		if n := get(owner.ok(qWorkflowSlug, map[string]any{"s": slug}), "workflows.totalCount"); n != float64(0) {
			t.Errorf("a viewer's refused createWorkflow wrote a workflow")
		}
		d := owner.ok(`{ environments(where: {name: "viewer-env"}) { totalCount } credentials(where: {name: "viewer-cred"}) { totalCount } }`, nil)
		if get(d, "environments.totalCount") != float64(0) || get(d, "credentials.totalCount") != float64(0) {
			t.Errorf("a viewer's refused mutations wrote: %v", d)
		}
	})

	t.Run("editor", func(t *testing.T) {
		ed := newClient(t, 0, token(t, f.tenantID, "editor"))
		owner := newClient(t, 1, f.owner.token)
		ed.fail("FORBIDDEN", mCreateCred, map[string]any{"e": f.envID, "n": "editor-cred", "t": "bearer", "s": map[string]any{"token": "x"}})
		ed.fail("FORBIDDEN", mRotateCred, map[string]any{"id": f.credentialID, "s": map[string]any{"token": "y"}})
		ed.fail("FORBIDDEN", mCreateKeyAs, map[string]any{"r": []string{"VIEWER"}})
		ed.fail("FORBIDDEN", mDeploy, map[string]any{"v": f.versionID, "e": f.prodEnvID})
		if n := get(owner.ok(qProdDeploys, map[string]any{"e": f.prodEnvID}), "deployments.totalCount"); n != float64(0) {
			t.Fatalf("a refused production deploy left %v deployments", n)
		}
		// An editor ships a new version to development on its own.
		v2 := str(ed.ok(mCreateVer, map[string]any{"w": f.workflowID, "d": simpleDefinition()}), "createWorkflowVersion.id")
		ed.ok(mPublish, map[string]any{"id": v2})
		d := ed.ok(mDeploy, map[string]any{"v": v2, "e": f.envID})
		if str(d, "deployWorkflowVersion.version.id") != v2 || get(d, "deployWorkflowVersion.active") != true {
			t.Fatalf("editor deploy to development: %v", d)
		}
	})

	t.Run("admin cannot grant owner", func(t *testing.T) {
		admin := newClient(t, 1, token(t, f.tenantID, "admin"))
		admin.fail("FORBIDDEN", mCreateKeyAs, map[string]any{"r": []string{"OWNER"}})
		admin.fail("FORBIDDEN", mCreateKeyAs, map[string]any{"r": []string{"VIEWER", "OWNER"}})
		d := admin.ok(mCreateKeyAs, map[string]any{"r": []string{"ADMIN"}}) // control
		if roles := get(d, "createAPIKey.apiKey.roles"); len(roles.([]any)) != 1 || roles.([]any)[0] != "admin" {
			t.Fatalf("admin key roles: %v", roles)
		}
		// An owner can.
		d = newClient(t, 0, f.owner.token).ok(mCreateKeyAs, map[string]any{"r": []string{"OWNER"}})
		if str(d, "createAPIKey.apiKey.id") == "" {
			t.Fatalf("owner cannot grant owner: %v", d)
		}
	})
}

// TestAuthAPIKeys uses API keys as bearer tokens: they work, they are
// tracked, and revocation takes effect on the very next request.
func TestAuthAPIKeys(t *testing.T) {
	t.Parallel()
	f, other := newFixture(t, "auth-key"), newFixture(t, "auth-key-other")
	const qKey = `query($id: ID!) { node(id: $id) { ... on APIKey { id lastUsedAt revokedAt } } }`

	if d := f.owner.ok(qKey, map[string]any{"id": f.apiKeyID}); str(d, "node.id") != f.apiKeyID || get(d, "node.lastUsedAt") != nil {
		t.Fatalf("a fresh key has lastUsedAt: %v", d)
	}
	key := newClient(t, 1, f.apiKeyToken)
	d := key.ok(authViewerQuery, nil)
	if str(d, "viewer.apiKeyID") != f.apiKeyID || str(d, "viewer.tenant.id") != f.tenantID {
		t.Fatalf("API key viewer: %v", d)
	}
	if d := f.owner.ok(qKey, map[string]any{"id": f.apiKeyID}); get(d, "node.lastUsedAt") == nil {
		t.Errorf("lastUsedAt not set after use: %v", d)
	}
	// The key holds the viewer role only.
	key.fail("FORBIDDEN", mCreateWF, map[string]any{"n": "K", "s": "key-" + randHex(3)})

	tenantPart := strings.Split(strings.TrimPrefix(f.apiKeyToken, "slk_"), "_")[0]
	otherPart := strings.Split(strings.TrimPrefix(other.apiKeyToken, "slk_"), "_")[0]
	flipped := []byte(f.apiKeyToken)
	if flipped[len(flipped)-1] == '0' {
		flipped[len(flipped)-1] = '1'
	} else {
		flipped[len(flipped)-1] = '0'
	}
	for name, tok := range map[string]string{
		"bare prefix":            "slk_",
		"garbage":                "slk_garbage",
		"unknown secret":         "slk_" + tenantPart + "_" + strings.Repeat("0", 64),
		"last character changed": string(flipped),
		"another tenant's part":  strings.Replace(f.apiKeyToken, tenantPart, otherPart, 1),
		"truncated":              f.apiKeyToken[:len(f.apiKeyToken)-1],
		"not a tenant":           "slk_notatenant_" + strings.Repeat("a", 64),
	} {
		authRejected(t, name, newClient(t, 0, tok).do(authViewerQuery, nil))
	}

	d = f.owner.ok(mRevokeKey, map[string]any{"id": f.apiKeyID})
	if get(d, "revokeAPIKey.revokedAt") == nil {
		t.Fatalf("revoke: %v", d)
	}
	for i := range 2 {
		authRejected(t, "revoked key", newClient(t, i, f.apiKeyToken).do(authViewerQuery, nil))
	}
	// The other tenant's key is untouched.
	if d := newClient(t, 0, other.apiKeyToken).ok(authViewerQuery, nil); str(d, "viewer.tenant.id") != other.tenantID {
		t.Fatalf("other key: %v", d)
	}
}
