package e2e

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sluicehq/sluice/internal/ids"
)

// Tokens that verify but must not authenticate: a tid naming no tenant, and
// an exp given as a string.

func TestAuthTokenOfUnknownTenantRefused(t *testing.T) {
	t.Parallel()
	ghost := ids.New(ids.Tenant) // well-formed, of no tenant
	tok := token(t, ghost, "owner")
	for i := range 2 {
		authRejected(t, "POST /graphql", newClient(t, i, tok).do(authViewerQuery, nil))
		authRejected(t, "createWorkflow", newClient(t, i, tok).do(`mutation { createWorkflow(input: {name: "x", slug: "x"}) { id } }`, nil))
	}
	if got := wsCloseCode(t, wsBearer(tok)); got != 4401 {
		t.Fatalf("websocket: close code %d, want 4401", got)
	}
	// Control: a tenant created now is known at once.
	real := newTenant(t, "auth-known")
	if r := newClient(t, 1, token(t, real, "viewer")).do(authViewerQuery, nil); r.Status != http.StatusOK || str(r.Data, "viewer.tenant.id") != real {
		t.Fatalf("a new tenant's token: %d %s", r.Status, r.Raw)
	}
}

func TestAuthStringExpRefused(t *testing.T) {
	t.Parallel()
	tenantID := newTenant(t, "auth-strexp")
	now := time.Now()
	claims := func(exp any) jwt.MapClaims {
		return jwt.MapClaims{
			"sub": "auth-e2e@e2e.test", "iss": jwtIssuer, "aud": jwtAudience,
			"iat": now.Unix(), "exp": exp, "tid": tenantID, "roles": []string{"owner"},
		}
	}
	sign := func(c jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(jwtSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Control: the same claims with a numeric exp are accepted.
	if r := newClient(t, 0, sign(claims(now.Add(time.Hour).Unix()))).do(authViewerQuery, nil); r.Status != http.StatusOK {
		t.Fatalf("control: %d %s", r.Status, r.Raw)
	}
	exp := now.Add(time.Hour).Unix()
	for name, c := range map[string]jwt.MapClaims{
		"exp string": claims(jsonString(exp)),
		"nbf string": func() jwt.MapClaims { c := claims(exp); c["nbf"] = jsonString(now.Unix()); return c }(),
		"iat string": func() jwt.MapClaims { c := claims(exp); c["iat"] = jsonString(now.Unix()); return c }(),
	} {
		for i := range 2 {
			authRejected(t, name, newClient(t, i, sign(c)).do(authViewerQuery, nil))
		}
	}
}

func jsonString(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
