package e2e

import (
	"strings"
	"testing"
)

const (
	qCredList   = `{ credentials { totalCount edges { node { id name type currentVersion fingerprint createdBy rotatedAt createdAt updatedAt environmentID environment { name } } } } }`
	qCredNode   = `query($id: ID!) { node(id: $id) { id ... on Credential { name type currentVersion fingerprint rotatedAt createdBy environment { id name } } } }`
	qCredAudit  = `{ auditLogs(first: 1000) { totalCount edges { node { id action actor actorType targetType targetID requestID metadata createdAt } } } }`
	qCredViewer = `{ viewer { subject roles apiKeyID tenant { id slug name retentionDays slaDefaults monthlyBudgetMicroUSD monthlyBudgetUSD } } }`
	mCredRotate = `mutation($id: ID!, $s: Map!) { rotateCredential(input: {id: $id, secret: $s}) { id name type currentVersion fingerprint rotatedAt updatedAt } }`
)

// credTenant is a fresh tenant seen by its owner, with its environment ids
// by name.
func credTenant(t *testing.T, prefix string, i int) (*client, map[string]string) {
	t.Helper()
	tid := newTenant(t, prefix)
	c := newClient(t, i, token(t, tid, "owner"))
	envs := map[string]string{}
	for _, e := range edges(c.ok(qEnvironments, nil), "environments") {
		envs[e["name"].(string)] = e["id"].(string)
	}
	if envs["development"] == "" || envs["production"] == "" {
		t.Fatalf("default environments missing: %v", envs)
	}
	return c, envs
}

// credAudit returns the audit entries of the caller's tenant keyed by
// "action targetID".
func credAudit(c *client) (int, map[string]map[string]any) {
	c.t.Helper()
	d := c.ok(qCredAudit, nil)
	out := map[string]map[string]any{}
	for _, n := range edges(d, "auditLogs") {
		out[str(n, "action")+" "+str(n, "targetID")] = n
	}
	return int(get(d, "auditLogs.totalCount").(float64)), out
}

func credCount(c *client) int {
	c.t.Helper()
	return int(get(c.ok(`{ credentials { totalCount } }`, nil), "credentials.totalCount").(float64))
}

// TestCredentialSecretsNeverLeak stores canary secrets of several types,
// rotates and deletes them, and looks for the canary everywhere a client or
// operator could see it.
func TestCredentialSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	c, envs := credTenant(t, "cred-leak", 0)
	other := newClient(t, 1, c.token) // the same caller through the other API process
	canary := "canary-" + randHex(16)
	var seen []string // every response body, checked for the canary at the end
	record := func(r *result) *result {
		seen = append(seen, r.Raw)
		return r
	}
	okData := func(cl *client, q string, vars map[string]any) map[string]any {
		t.Helper()
		r := record(cl.do(q, vars))
		if len(r.Errors) > 0 {
			t.Fatalf("unexpected errors: %s", r.Raw)
		}
		return r.Data
	}

	type credCase struct {
		name, typ string
		secret    func(v string) map[string]any
	}
	cases := []credCase{
		{"crm", "bearer", func(v string) map[string]any { return map[string]any{"token": v + "-bearer"} }},
		{"llm", "openai", func(v string) map[string]any {
			return map[string]any{"apiKey": v + "-openai", "baseURL": "https://llm.example.com/v1", "organization": v + "-org"}
		}},
		{"legacy", "basic", func(v string) map[string]any {
			return map[string]any{"username": v + "-user", "password": v + "-basic"}
		}},
	}
	ids := map[string]string{}
	fingerprints := map[string]string{}
	for _, cc := range cases {
		d := okData(c, mCreateCred, map[string]any{"e": envs["development"], "n": cc.name, "t": cc.typ, "s": cc.secret(canary)})
		id := str(d, "createCredential.id")
		if !strings.HasPrefix(id, "cred_") || str(d, "createCredential.type") != cc.typ || get(d, "createCredential.currentVersion") != float64(1) {
			t.Fatalf("createCredential %s: %v", cc.name, d)
		}
		fp := str(d, "createCredential.fingerprint")
		if fp == "" {
			t.Fatalf("createCredential %s: empty fingerprint", cc.name)
		}
		ids[cc.name], fingerprints[cc.name] = id, fp
	}
	if len(map[string]bool{fingerprints["crm"]: true, fingerprints["llm"]: true, fingerprints["legacy"]: true}) != 3 {
		t.Fatalf("different secrets share a fingerprint: %v", fingerprints)
	}

	// A bad secret carrying the canary is refused without echoing it.
	bad := record(c.do(mCreateCred, map[string]any{"e": envs["development"], "n": "leaky", "t": "bearer",
		"s": map[string]any{"token": 42, "tokn": canary + "-typo"}}))
	if bad.Code() != "VALIDATION" {
		t.Fatalf("bad secret: want VALIDATION, got %s", bad.Raw)
	}

	rotated := canary + "-rotated"
	for i, cc := range cases {
		d := okData(c, mCredRotate, map[string]any{"id": ids[cc.name], "s": cc.secret(rotated)})
		if get(d, "rotateCredential.currentVersion") != float64(2) {
			t.Errorf("rotate %s: currentVersion %v, want 2", cc.name, get(d, "rotateCredential.currentVersion"))
		}
		if fp := str(d, "rotateCredential.fingerprint"); fp == "" || fp == fingerprints[cc.name] {
			t.Errorf("rotate %s: fingerprint %q did not change from %q", cc.name, fp, fingerprints[cc.name])
		} else {
			fingerprints[cc.name] = fp
		}
		if str(d, "rotateCredential.rotatedAt") == "" {
			t.Errorf("rotate %s: rotatedAt not set: %v", cc.name, d)
		}
		// The other API process sees the rotation too.
		n := okData(newClient(t, i+1, c.token), qCredNode, map[string]any{"id": ids[cc.name]})
		if get(n, "node.currentVersion") != float64(2) || str(n, "node.fingerprint") != fingerprints[cc.name] {
			t.Errorf("node %s after rotation: %v", cc.name, n)
		}
	}
	// Rotating twice more keeps counting.
	d := okData(other, mCredRotate, map[string]any{"id": ids["crm"], "s": cases[0].secret(rotated + "-again")})
	if get(d, "rotateCredential.currentVersion") != float64(3) {
		t.Errorf("second rotation: %v", d)
	}

	list := okData(c, qCredList, nil)
	if get(list, "credentials.totalCount") != float64(3) {
		t.Fatalf("credentials: %v", list)
	}
	okData(other, qCredList, nil)
	okData(c, qCredViewer, nil)
	okData(c, `query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Credential { name fingerprint } } }`,
		map[string]any{"ids": []string{ids["crm"], ids["llm"], ids["legacy"]}})
	okData(c, `query($e: ID!) { node(id: $e) { ... on Environment { name credentials { edges { node { id name fingerprint } } } } } }`,
		map[string]any{"e": envs["development"]})
	_, audit := credAudit(c)
	seen = append(seen, c.do(qCredAudit, nil).Raw)
	for _, cc := range cases {
		for _, action := range []string{"credential.create", "credential.rotate"} {
			e, ok := audit[action+" "+ids[cc.name]]
			if !ok {
				t.Errorf("no %s audit entry for %s", action, cc.name)
				continue
			}
			if str(e, "actorType") != "user" || str(e, "actor") == "" || str(e, "requestID") == "" {
				t.Errorf("%s audit entry for %s lacks who/request: %v", action, cc.name, e)
			}
		}
	}

	// At rest, credential versions hold only ciphertext, one per version.
	db := ownerDB(t)
	var leaks, versions int
	if err := db.QueryRow(`SELECT count(*), count(*) FILTER (WHERE position(convert_to($1, 'UTF8') in ciphertext) > 0) FROM credential_versions WHERE credential_id = ANY($2)`,
		canary, []string{ids["crm"], ids["llm"], ids["legacy"]}).Scan(&versions, &leaks); err != nil {
		t.Fatal(err)
	}
	if versions != 7 || leaks != 0 {
		t.Errorf("credential versions: %d (want 7), %d storing the secret in clear", versions, leaks)
	}

	// Delete every credential; each deletion is audited and the credential
	// is gone from node and list.
	for _, cc := range cases {
		d := okData(c, mDeleteCred, map[string]any{"id": ids[cc.name]})
		if str(d, "deleteCredential") != ids[cc.name] {
			t.Fatalf("deleteCredential %s: %v", cc.name, d)
		}
		if n := okData(other, qCredNode, map[string]any{"id": ids[cc.name]}); get(n, "node") != nil {
			t.Errorf("node %s after delete: %v", cc.name, n)
		}
	}
	if r := record(c.do(mDeleteCred, map[string]any{"id": ids["crm"]})); r.Code() != "NOT_FOUND" {
		t.Errorf("deleting twice: want NOT_FOUND, got %s", r.Raw)
	}
	if r := record(c.do(mCredRotate, map[string]any{"id": ids["crm"], "s": cases[0].secret(rotated)})); r.Code() != "NOT_FOUND" {
		t.Errorf("rotating a deleted credential: want NOT_FOUND, got %s", r.Raw)
	}
	if list := okData(c, qCredList, nil); get(list, "credentials.totalCount") != float64(0) || len(edges(list, "credentials")) != 0 {
		t.Errorf("credentials after delete: %v", list)
	}
	if err := db.QueryRow(`SELECT count(*) FROM credential_versions WHERE credential_id = ANY($1)`,
		[]string{ids["crm"], ids["llm"], ids["legacy"]}).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if versions != 0 {
		t.Errorf("%d credential versions left after delete", versions)
	}
	_, audit = credAudit(c)
	seen = append(seen, c.do(qCredAudit, nil).Raw)
	for _, cc := range cases {
		e, ok := audit["credential.delete "+ids[cc.name]]
		if !ok {
			t.Errorf("no credential.delete audit entry for %s", cc.name)
		} else if get(e, "metadata.name") != cc.name {
			t.Errorf("credential.delete metadata for %s: %v", cc.name, get(e, "metadata"))
		}
	}

	for i, body := range seen {
		if strings.Contains(body, canary) {
			t.Errorf("response %d contains the secret: %s", i, body)
		}
	}
	logs := allLogs()
	for _, w := range suite.workers {
		logs += w.Logs()
	}
	if strings.Contains(logs, canary) {
		i := strings.Index(logs, canary)
		t.Errorf("server logs contain the secret near: %s", logs[max(0, i-300):min(len(logs), i+100)])
	}

	// At rest: the audit table holds no secret.
	leaks = 0
	if err := db.QueryRow(`SELECT count(*) FROM audit_logs WHERE metadata::text LIKE '%' || $1 || '%' OR target_id LIKE '%' || $1 || '%'`, canary).Scan(&leaks); err != nil {
		t.Fatal(err)
	}
	if leaks != 0 {
		t.Errorf("%d audit rows contain the secret", leaks)
	}
}

// TestCredentialBadSecrets sends malformed secrets and checks each is refused
// with the offending key's path and nothing written.
func TestCredentialBadSecrets(t *testing.T) {
	t.Parallel()
	c, envs := credTenant(t, "cred-bad", 1)
	dev := envs["development"]
	existing := str(c.ok(mCreateCred, map[string]any{"e": dev, "n": "crm", "t": "bearer", "s": map[string]any{"token": "t-" + randHex(8)}}), "createCredential.id")
	before := c.ok(qCredNode, map[string]any{"id": existing})

	tests := []struct {
		name, credName, typ string
		secret              map[string]any
		path                string
	}{
		{"bearer missing token", "a", "bearer", map[string]any{}, "input.secret.token"},
		{"bearer empty token", "a", "bearer", map[string]any{"token": ""}, "input.secret.token"},
		{"bearer unknown key", "a", "bearer", map[string]any{"token": "x", "tokne": "y"}, "input.secret.tokne"},
		{"bearer non-string token", "a", "bearer", map[string]any{"token": 12345}, "input.secret.token"},
		{"bearer object token", "a", "bearer", map[string]any{"token": map[string]any{"v": "x"}}, "input.secret.token"},
		{"openai missing apiKey", "a", "openai", map[string]any{"baseURL": "https://api.example.com"}, "input.secret.apiKey"},
		{"openai bad baseURL", "a", "openai", map[string]any{"apiKey": "k", "baseURL": "ftp://api.example.com"}, "input.secret.baseURL"},
		{"openai relative baseURL", "a", "openai", map[string]any{"apiKey": "k", "baseURL": "/v1"}, "input.secret.baseURL"},
		{"openai non-string baseURL", "a", "openai", map[string]any{"apiKey": "k", "baseURL": true}, "input.secret.baseURL"},
		{"basic missing password", "a", "basic", map[string]any{"username": "u"}, "input.secret.password"},
		{"basic unknown key", "a", "basic", map[string]any{"username": "u", "password": "p", "realm": "r"}, "input.secret.realm"},
		{"bad name", "Not A Name", "bearer", map[string]any{"token": "x"}, "input.name"},
	}
	creds := credCount(c)
	audits, _ := credAudit(c)
	check := func(t *testing.T) {
		t.Helper()
		if n := credCount(c); n != creds {
			t.Errorf("credentials: %d, want %d", n, creds)
		}
		if n, _ := credAudit(c); n != audits {
			t.Errorf("audit entries: %d, want %d", n, audits)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, 0, c.token)
			r := c.fail("VALIDATION", mCreateCred, map[string]any{"e": dev, "n": tt.credName, "t": tt.typ, "s": tt.secret})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
			check(t)
		})
	}

	t.Run("unknown type", func(t *testing.T) {
		// CredentialType is an enum: gqlgen refuses the variable before the
		// resolver runs, naming the variable and the type.
		r := newClient(t, 0, c.token).do(mCreateCred, map[string]any{"e": dev, "n": "a", "t": "ftp", "s": map[string]any{"token": "x"}})
		if code := r.Code(); code != "VALIDATION" {
			t.Fatalf("want a validation error, got %s", r.Raw)
		}
		if !strings.Contains(r.Errors[0].Message, "CredentialType") && !hasProblemAt(r, "input.type") {
			t.Errorf("error does not name the type: %s", r.Raw)
		}
		check(t)
	})

	t.Run("rotate with a bad secret", func(t *testing.T) {
		c := newClient(t, 1, c.token)
		r := c.fail("VALIDATION", mRotateCred, map[string]any{"id": existing, "s": map[string]any{"token": "ok", "extra": "x"}})
		if !hasProblemAt(r, "input.secret.extra") {
			t.Errorf("want path input.secret.extra, got %s", r.Raw)
		}
		r = c.fail("VALIDATION", mRotateCred, map[string]any{"id": existing, "s": map[string]any{"apiKey": "k"}})
		if !hasProblemAt(r, "input.secret.token") {
			t.Errorf("rotating a bearer credential with an openai secret: want path input.secret.token, got %s", r.Raw)
		}
		after := c.ok(qCredNode, map[string]any{"id": existing})
		if get(after, "node.currentVersion") != get(before, "node.currentVersion") ||
			str(after, "node.fingerprint") != str(before, "node.fingerprint") || get(after, "node.rotatedAt") != nil {
			t.Errorf("failed rotation changed the credential: before %v, after %v", before, after)
		}
		check(t)
	})

	t.Run("duplicate name in one environment", func(t *testing.T) {
		c := newClient(t, 1, c.token)
		c.fail("CONFLICT", mCreateCred, map[string]any{"e": dev, "n": "crm", "t": "basic", "s": map[string]any{"username": "u", "password": "p"}})
		check(t)
		// The same name in another environment is another credential.
		d := c.ok(mCreateCred, map[string]any{"e": envs["production"], "n": "crm", "t": "bearer", "s": map[string]any{"token": "prod"}})
		if id := str(d, "createCredential.id"); id == "" || id == existing {
			t.Errorf("credential in production: %v", d)
		}
		if n := credCount(c); n != creds+1 {
			t.Errorf("credentials: %d, want %d", n, creds+1)
		}
	})

	t.Run("roles", func(t *testing.T) {
		editor := newClient(t, 0, token(t, str(c.ok(qCredViewer, nil), "viewer.tenant.id"), "editor"))
		editor.fail("FORBIDDEN", mCreateCred, map[string]any{"e": dev, "n": "sneaky", "t": "bearer", "s": map[string]any{"token": "x"}})
		editor.fail("FORBIDDEN", mRotateCred, map[string]any{"id": existing, "s": map[string]any{"token": "x"}})
		editor.fail("FORBIDDEN", mDeleteCred, map[string]any{"id": existing})
		if n := c.ok(qCredNode, map[string]any{"id": existing}); get(n, "node.currentVersion") != float64(1) {
			t.Errorf("credential after forbidden calls: %v", n)
		}
	})
}

// hasProblemAt reports whether any error names path in extensions.path or
// extensions.problems[].path.
func hasProblemAt(r *result, path string) bool {
	for _, e := range r.Errors {
		if p, _ := e.Extensions["path"].(string); p == path {
			return true
		}
		problems, _ := e.Extensions["problems"].([]any)
		for _, p := range problems {
			if pp, _ := get(p, "path").(string); pp == path {
				return true
			}
		}
	}
	return false
}
