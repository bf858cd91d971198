package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
)

// TestCrossTenantIsolation is the cross-tenant matrix: tenant B's owner
// reaches none of tenant A's objects, by id, by list, by filter, by edge or by
// mutation, and every refusal is indistinguishable from an id that never
// existed. A's API key, in turn, sees only A.
func TestCrossTenantIsolation(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "iso-a"), newFixture(t, "iso-b")
	// Members have no GraphQL mutation; they are provisioned from a manifest.
	memberSubject := "iso-member-" + randHex(3) + "@e2e.test"
	isoAddMember(t, a, memberSubject)
	isoAddMember(t, b, "iso-member-"+randHex(3)+"@e2e.test")
	// A key scoped to an environment, so filters on environments have
	// something of A's to find.
	a.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-only", roles: [VIEWER], environmentID: $e}) { token } }`, map[string]any{"e": a.envID})

	// Every object of A with its type, and the ids B must not learn about.
	objects := []struct{ typ, id string }{
		{"Tenant", a.tenantID},
		{"Member", a.memberID},
		{"APIKey", a.apiKeyID},
		{"Environment", a.envID},
		{"Environment", a.prodEnvID},
		{"Workflow", a.workflowID},
		{"WorkflowVersion", a.versionID},
		{"WorkflowVersion", a.draftID},
		{"Deployment", a.deploymentID},
		{"Credential", a.credentialID},
		{"AuditLog", a.auditLogID},
	}
	before := isoSnapshot(t, a.owner)

	t.Run("node", func(t *testing.T) {
		const q = `query($id: ID!) { node(id: $id) { id __typename } }`
		ownerA, ownerB := isoClient(t, a, 0), isoClient(t, b, 1)
		for _, o := range objects {
			// Control: the id is real and A reaches it.
			if d := ownerA.ok(q, map[string]any{"id": o.id}); str(d, "node.id") != o.id || str(d, "node.__typename") != o.typ {
				t.Fatalf("A cannot read its own %s %s: %v", o.typ, o.id, d)
			}
			r := isoSame(t, ownerB, q, o.id)
			if r.Data == nil || get(r.Data, "node") != nil || len(r.Errors) > 0 {
				t.Errorf("B reads A's %s %s: %s", o.typ, o.id, r.Raw)
			}
		}
	})

	t.Run("nodes", func(t *testing.T) {
		const q = `query($ids: [ID!]!) { nodes(ids: $ids) { id __typename } }`
		ownerB := isoClient(t, b, 0)
		var real, fake []string
		for _, o := range objects {
			real = append(real, o.id)
			fake = append(fake, isoFakeID(o.id))
		}
		rReal := ownerB.do(q, map[string]any{"ids": real})
		rFake := ownerB.do(q, map[string]any{"ids": fake})
		if rReal.Raw != rFake.Raw || rReal.Status != rFake.Status {
			t.Fatalf("nodes(A's ids) differs from nodes(unknown ids):\n%s\n%s", rReal.Raw, rFake.Raw)
		}
		list, _ := get(rReal.Data, "nodes").([]any)
		if len(list) != len(real) {
			t.Fatalf("nodes: %s", rReal.Raw)
		}
		for i, n := range list {
			if n != nil {
				t.Errorf("B reads A's %s via nodes: %v", objects[i].typ, n)
			}
		}
		// Mixed with B's own ids, only B's resolve, in place.
		d := ownerB.ok(q, map[string]any{"ids": []string{b.workflowID, a.workflowID, b.credentialID, a.credentialID}})
		mixed, _ := get(d, "nodes").([]any)
		if len(mixed) != 4 || get(mixed[0], "id") != b.workflowID || mixed[1] != nil || get(mixed[2], "id") != b.credentialID || mixed[3] != nil {
			t.Fatalf("mixed nodes: %v", mixed)
		}
	})

	t.Run("lists by id", func(t *testing.T) {
		ownerA, ownerB := isoClient(t, a, 1), isoClient(t, b, 0)
		lists := []struct{ field, aID, bID string }{
			{"workflows", a.workflowID, b.workflowID},
			{"environments", a.envID, b.envID},
			{"credentials", a.credentialID, b.credentialID},
			{"apiKeys", a.apiKeyID, b.apiKeyID},
			{"auditLogs", a.auditLogID, b.auditLogID},
			{"deployments", a.deploymentID, b.deploymentID},
			{"members", a.memberID, b.memberID},
		}
		for _, l := range lists {
			for _, where := range []string{`{id: $id}`, `{idIn: [$id]}`, `{or: [{id: $id}, {idGTE: $id, idLTE: $id}]}`} {
				q := fmt.Sprintf(`query($id: ID!) { %s(where: %s) { totalCount edges { node { id } } } }`, l.field, where)
				if n := get(ownerA.ok(q, map[string]any{"id": l.aID}), l.field+".totalCount"); n != float64(1) {
					t.Fatalf("control: A's %s where %s: totalCount %v", l.field, where, n)
				}
				r := isoSame(t, ownerB, q, l.aID)
				if n := get(r.Data, l.field+".totalCount"); n != float64(0) || len(edges(r.Data, l.field)) != 0 {
					t.Errorf("B's %s where %s finds A's object: %s", l.field, where, r.Raw)
				}
			}
			// Unfiltered, B sees its own object and nothing of A.
			q := fmt.Sprintf(`{ %s(first: 100) { totalCount edges { node { id } } } }`, l.field)
			r := ownerB.do(q, nil)
			if len(r.Errors) > 0 || !strings.Contains(r.Raw, l.bID) {
				t.Fatalf("control: B's %s misses its own %s: %s", l.field, l.bID, r.Raw)
			}
			isoNoneOf(t, "B's "+l.field, r.Raw, a)
		}
	})

	t.Run("filters on A's references", func(t *testing.T) {
		ownerA, ownerB := isoClient(t, a, 0), isoClient(t, b, 1)
		filters := []struct{ field, where, id string }{
			{"credentials", `{environmentID: $id}`, a.envID},
			{"credentials", `{hasEnvironmentWith: [{id: $id}]}`, a.envID},
			{"apiKeys", `{environmentID: $id}`, a.envID},
			{"apiKeys", `{hasEnvironmentWith: [{id: $id}]}`, a.envID},
			{"deployments", `{workflowID: $id}`, a.workflowID},
			{"deployments", `{versionID: $id}`, a.versionID},
			{"deployments", `{environmentID: $id}`, a.envID},
			{"deployments", `{hasVersionWith: [{id: $id}]}`, a.versionID},
			{"deployments", `{hasWorkflowWith: [{id: $id}]}`, a.workflowID},
			{"workflows", `{hasVersionsWith: [{id: $id}]}`, a.versionID},
			{"workflows", `{hasDeploymentsWith: [{id: $id}]}`, a.deploymentID},
			{"environments", `{hasCredentialsWith: [{id: $id}]}`, a.credentialID},
			{"environments", `{hasDeploymentsWith: [{versionID: $id}]}`, a.versionID},
			{"auditLogs", `{targetID: $id}`, a.workflowID},
			{"members", `{subject: $id}`, memberSubject},
		}
		for _, f := range filters {
			q := fmt.Sprintf(`query($id: %s) { %s(where: %s) { totalCount edges { node { id } } } }`, isoArgType(f.where), f.field, f.where)
			if n := get(ownerA.ok(q, map[string]any{"id": f.id}), f.field+".totalCount"); n == float64(0) || n == nil {
				t.Fatalf("control: A's %s where %s finds nothing", f.field, f.where)
			}
			d := ownerB.ok(q, map[string]any{"id": f.id})
			if n := get(d, f.field+".totalCount"); n != float64(0) {
				t.Errorf("B's %s where %s (A's value) finds %v objects: %v", f.field, f.where, n, d)
			}
		}
	})

	t.Run("edges", func(t *testing.T) {
		ownerB := isoClient(t, b, 0)
		// B walks everything it can reach, through every edge, and meets
		// nothing of A.
		raw := isoDump(t, ownerB)
		if !strings.Contains(raw, b.versionID) || !strings.Contains(raw, b.draftID) || !strings.Contains(raw, b.deploymentID) {
			t.Fatalf("control: B's walk misses its own objects: %s", raw)
		}
		isoNoneOf(t, "B's walk of its graph", raw, a)
		// Edges filtered by A's ids, from B's own objects.
		q := `query($w: ID!, $e: ID!, $v: ID!, $c: ID!) {
		  w: node(id: $w) { ... on Workflow { versions(where: {id: $v}) { totalCount } deployments(where: {versionID: $v}) { totalCount } } }
		  e: node(id: $e) { ... on Environment { deployments(where: {hasVersionWith: [{id: $v}]}) { totalCount } credentials(where: {id: $c}) { totalCount } } }
		}`
		d := ownerB.ok(q, map[string]any{"w": b.workflowID, "e": b.envID, "v": a.versionID, "c": a.credentialID})
		for _, p := range []string{"w.versions", "w.deployments", "e.deployments", "e.credentials"} {
			if n := get(d, p+".totalCount"); n != float64(0) {
				t.Errorf("%s reaches A's objects: %v", p, d)
			}
		}
	})

	t.Run("mutations", func(t *testing.T) {
		ownerB := isoClient(t, b, 1)
		def := simpleDefinition()
		const mUpdateVer = `mutation($id: ID!, $d: Map!) { updateWorkflowVersion(input: {id: $id, definition: $d}) { id } }`
		const mCreateKeyIn = `mutation($e: ID!) { createAPIKey(input: {name: "x", roles: [VIEWER], environmentID: $e}) { token } }`
		cases := []struct {
			name, query, aID string
			vars             func(id string) map[string]any
		}{
			{"publishWorkflowVersion", mPublish, a.draftID, func(id string) map[string]any { return map[string]any{"id": id} }},
			{"updateWorkflowVersion", mUpdateVer, a.draftID, func(id string) map[string]any { return map[string]any{"id": id, "d": def} }},
			{"createWorkflowVersion on A's workflow", mCreateVer, a.workflowID, func(id string) map[string]any { return map[string]any{"w": id, "d": def} }},
			{"deploy A's version into B's env", mDeploy, a.versionID, func(id string) map[string]any { return map[string]any{"v": id, "e": b.envID} }},
			{"deploy B's version into A's env", mDeploy, a.envID, func(id string) map[string]any { return map[string]any{"v": b.versionID, "e": id} }},
			{"deploy B's version into A's production", mDeploy, a.prodEnvID, func(id string) map[string]any { return map[string]any{"v": b.versionID, "e": id} }},
			{"rotateCredential", mRotateCred, a.credentialID, func(id string) map[string]any {
				return map[string]any{"id": id, "s": map[string]any{"token": "stolen"}}
			}},
			{"deleteCredential", mDeleteCred, a.credentialID, func(id string) map[string]any { return map[string]any{"id": id} }},
			{"revokeAPIKey", mRevokeKey, a.apiKeyID, func(id string) map[string]any { return map[string]any{"id": id} }},
			{"createCredential in A's env", mCreateCred, a.envID, func(id string) map[string]any {
				return map[string]any{"e": id, "n": "planted", "t": "bearer", "s": map[string]any{"token": "x"}}
			}},
			{"createAPIKey scoped to A's env", mCreateKeyIn, a.envID, func(id string) map[string]any { return map[string]any{"e": id} }},
		}
		for _, c := range cases {
			rReal := ownerB.do(c.query, c.vars(c.aID))
			fake := isoFakeID(c.aID)
			rFake := ownerB.do(c.query, c.vars(fake))
			if rReal.Code() != "NOT_FOUND" {
				t.Errorf("%s: want NOT_FOUND, got %s", c.name, rReal.Raw)
				continue
			}
			if rReal.Data != nil || len(rReal.Errors) != 1 {
				t.Errorf("%s: want one error and no data, got %s", c.name, rReal.Raw)
			}
			nReal, nFake := isoNormalise(rReal.Raw, c.aID), isoNormalise(rFake.Raw, fake)
			if nReal != nFake || rReal.Status != rFake.Status {
				t.Errorf("%s: A's id and an unknown id answer differently:\n%d %s\n%d %s", c.name, rReal.Status, nReal, rFake.Status, nFake)
			}
		}
	})

	t.Run("member roles do not cross tenants", func(t *testing.T) {
		noRoles := func(tid string) string {
			tok, err := auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience, auth.Claims{Subject: memberSubject, TenantID: tid}, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}
		// Control: in A, the member's roles come from its Member row.
		d := newClient(t, 0, noRoles(a.tenantID)).ok(`{ viewer { tenant { id } roles } }`, nil)
		if str(d, "viewer.tenant.id") != a.tenantID || fmt.Sprint(get(d, "viewer.roles")) != "[viewer]" {
			t.Fatalf("control: member viewer: %v", d)
		}
		r := newClient(t, 1, noRoles(b.tenantID)).do(`{ viewer { tenant { id } roles } }`, nil)
		if r.Code() != "FORBIDDEN" || r.Data != nil {
			t.Fatalf("A's member in B: want FORBIDDEN, got %s", r.Raw)
		}
	})

	t.Run("A unchanged", func(t *testing.T) {
		after := isoSnapshot(t, isoClient(t, a, 1))
		for k, v := range before {
			if fmt.Sprint(after[k]) != fmt.Sprint(v) {
				t.Errorf("A's %s changed:\nbefore %v\nafter  %v", k, v, after[k])
			}
		}
	})

	t.Run("same names do not collide", func(t *testing.T) {
		// Unique keys include the tenant: B creating what A already has is
		// no existence oracle.
		slug := "secret-project-" + randHex(3)
		isoClient(t, a, 0).ok(mCreateWF, map[string]any{"n": "Secret", "s": slug})
		d := isoClient(t, b, 1).ok(mCreateWF, map[string]any{"n": "Mine", "s": slug})
		if str(d, "createWorkflow.slug") != slug {
			t.Fatalf("B cannot use a slug A uses: %v", d)
		}
	})

	t.Run("A's API key sees only A", func(t *testing.T) {
		key := &client{t: t, url: server(1).url + "/graphql", token: a.apiKeyToken}
		d := key.ok(`{ viewer { tenant { id } apiKeyID } }`, nil)
		if str(d, "viewer.tenant.id") != a.tenantID || str(d, "viewer.apiKeyID") != a.apiKeyID {
			t.Fatalf("API key viewer: %v", d)
		}
		raw := isoDump(t, key)
		if !strings.Contains(raw, a.versionID) || !strings.Contains(raw, a.credentialID) {
			t.Fatalf("control: the key's walk misses A's objects: %s", raw)
		}
		isoNoneOf(t, "A's key's walk", raw, b)
		const q = `query($id: ID!) { node(id: $id) { id __typename } }`
		for _, id := range []string{b.tenantID, b.memberID, b.apiKeyID, b.envID, b.workflowID, b.versionID, b.deploymentID, b.credentialID, b.auditLogID} {
			if r := isoSame(t, key, q, id); get(r.Data, "node") != nil || len(r.Errors) > 0 {
				t.Errorf("A's key reads B's %s: %s", id, r.Raw)
			}
		}
	})
}

// isoClient is f's owner talking to server i, failing t (not the test that
// made the fixture) on transport errors.
func isoClient(t *testing.T, f *fixture, i int) *client {
	return &client{t: t, url: server(i).url + "/graphql", token: f.owner.token}
}

// isoFakeID is an id of the same type as id that never existed.
func isoFakeID(id string) string {
	return id[:strings.IndexByte(id, '_')] + "_01j" + strings.Repeat("z", 23)
}

// isoNormalise replaces id in a response so responses about different ids
// can be compared.
func isoNormalise(raw, id string) string { return strings.ReplaceAll(raw, id, "<ID>") }

// isoSame runs query about id and about an id that never existed, asserts the
// two responses are identical once the ids are normalised, and returns the
// one about id.
func isoSame(t *testing.T, c *client, query, id string) *result {
	t.Helper()
	fake := isoFakeID(id)
	real, unknown := c.do(query, map[string]any{"id": id}), c.do(query, map[string]any{"id": fake})
	if real.Status != unknown.Status || isoNormalise(real.Raw, id) != isoNormalise(unknown.Raw, fake) {
		t.Errorf("%s answers differently from an unknown id:\n%d %s\n%d %s", id, real.Status, real.Raw, unknown.Status, unknown.Raw)
	}
	return real
}

// isoArgType is the GraphQL type of $id in a where clause.
func isoArgType(where string) string {
	for _, s := range []string{"targetID", "subject"} {
		if strings.Contains(where, s) {
			return "String!"
		}
	}
	return "ID!"
}

// isoNoneOf fails when raw mentions any object of f.
func isoNoneOf(t *testing.T, what, raw string, f *fixture) {
	t.Helper()
	for _, id := range []string{f.tenantID, f.memberID, f.apiKeyID, f.envID, f.prodEnvID, f.workflowID, f.versionID, f.draftID, f.deploymentID, f.credentialID, f.auditLogID} {
		if id != "" && strings.Contains(raw, id) {
			t.Errorf("%s contains %s of tenant %s", what, id, f.tenantID)
		}
	}
}

// isoDump walks every list and edge the caller can reach and returns the raw
// response. It is one request with many sibling fields, which gqlgen resolves
// concurrently over the request's single transaction (this once failed with
// "conn busy").
func isoDump(t *testing.T, c *client) string {
	t.Helper()
	const q = `{
	  viewer { tenant { id slug } apiKeyID }
	  workflows(first: 100) { totalCount edges { node { id
	    versions(first: 100) { edges { node { id workflowID workflow { id } } } }
	    deployments(first: 100) { edges { node { id versionID version { id } environment { id } workflow { id } } } } } } }
	  environments(first: 100) { edges { node { id
	    deployments(first: 100) { edges { node { id version { id workflow { id } } } } }
	    credentials(first: 100) { edges { node { id environment { id } } } } } } }
	  credentials(first: 100) { edges { node { id environmentID environment { id } } } }
	  apiKeys(first: 100) { edges { node { id environmentID environment { id } } } }
	  auditLogs(first: 100) { totalCount edges { node { id targetID metadata } } }
	  deployments(first: 100) { edges { node { id versionID previousVersionID version { id } workflow { id } environment { id } } } }
	  members(first: 100) { edges { node { id subject } } }
	}`
	r := c.do(q, nil)
	if len(r.Errors) > 0 {
		t.Fatalf("walk: %s", r.Raw)
	}
	return r.Raw
}

// isoSnapshot is everything A's owner can see, keyed by list, to tell
// whether another tenant changed anything.
func isoSnapshot(t *testing.T, c *client) map[string]any {
	t.Helper()
	const q = `{
	  viewer { tenant { id slug name updatedAt } }
	  workflows(first: 100) { totalCount edges { node { id name slug updatedAt
	    versions(first: 100) { totalCount edges { node { id number status definition contentHash updatedAt publishedAt publishedBy } } } } } }
	  environments(first: 100) { totalCount edges { node { id name kind updatedAt } } }
	  credentials(first: 100) { totalCount edges { node { id name type environmentID currentVersion fingerprint rotatedAt updatedAt } } }
	  apiKeys(first: 100) { totalCount edges { node { id name roles environmentID revokedAt expiresAt updatedAt } } }
	  auditLogs(first: 100) { totalCount edges { node { id action targetID } } }
	  deployments(first: 100) { totalCount edges { node { id active versionID environmentID supersededAt } } }
	  members(first: 100) { totalCount edges { node { id subject roles updatedAt } } }
	}`
	return c.ok(q, nil)
}

// isoAddMember provisions a member with the viewer role in f's tenant the
// only way members are made, `sluice tenant apply -f`, and records its id.
func isoAddMember(t *testing.T, f *fixture, subject string) {
	t.Helper()
	d := f.owner.ok(`{ viewer { tenant { slug name } } }`, nil)
	manifest := fmt.Sprintf("slug: %s\nname: %q\nmembers:\n  - subject: %q\n    roles: [viewer]\n",
		str(d, "viewer.tenant.slug"), str(d, "viewer.tenant.name"), subject)
	path := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(path, []byte(manifest), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("tenant", "apply", "-f", path); err != nil {
		t.Fatalf("tenant apply: %v\n%s", err, out)
	}
	list := edges(f.owner.ok(`query($s: String!) { members(where: {subject: $s}) { edges { node { id } } } }`, map[string]any{"s": subject}), "members")
	if len(list) != 1 {
		t.Fatalf("member %s not provisioned: %v", subject, list)
	}
	f.memberID = list[0]["id"].(string)
}
