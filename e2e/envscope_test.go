package e2e

import "testing"

// TestEnvironmentScopedAPIKeyReads checks that an API key restricted to one
// environment reads only that environment and what belongs to it.
func TestEnvironmentScopedAPIKeyReads(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envscope")
	prodCred := str(f.owner.ok(mCreateCred, map[string]any{"e": f.prodEnvID, "n": "prod-crm", "t": "bearer", "s": map[string]any{"token": "t-" + randHex(8)}}), "createCredential.id")
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-only", roles: [OPERATOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))

	envs := edges(scoped.ok(qEnvironments, nil), "environments")
	if len(envs) != 1 || envs[0]["id"] != f.envID {
		t.Fatalf("scoped key sees environments %v, want only development", envs)
	}
	creds := edges(scoped.ok(`{ credentials { edges { node { id } } } }`, nil), "credentials")
	if len(creds) != 1 || creds[0]["id"] != f.credentialID {
		t.Fatalf("scoped key sees credentials %v, want only the development one", creds)
	}
	for _, id := range []string{prodCred, f.prodEnvID} {
		if n := get(scoped.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": id}), "node"); n != nil {
			t.Fatalf("scoped key reads %s of another environment: %v", id, n)
		}
	}
	// Workflows belong to no environment: still visible, and runs start in its environment only.
	if wfs := edges(scoped.ok(`{ workflows { edges { node { id } } } }`, nil), "workflows"); len(wfs) != 1 {
		t.Fatalf("scoped key sees workflows %v", wfs)
	}
	// Another environment reads like one that does not exist.
	scoped.fail("NOT_FOUND", mStartRun, map[string]any{"w": f.workflowID, "e": f.prodEnvID})
	run := str(scoped.ok(mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "x"}}), "startRun.id")
	if run == "" {
		t.Fatal("scoped key cannot start a run in its environment")
	}
	// The owner still sees everything.
	if all := edges(f.owner.ok(qEnvironments, nil), "environments"); len(all) != 3 {
		t.Fatalf("owner sees %d environments", len(all))
	}
}
