package e2e

import (
	"testing"
	"time"
)

// startRun writes an audit entry like every other mutation: actor, run,
// workflow, environment and idempotency key. A repeat with the same key
// returns the existing run and writes no second entry.
func TestStartRunIsAudited(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "auditrun")
	c := newClient(t, 1, token(t, f.tenantID, "operator"))
	key := "audit-" + randHex(4)
	vars := map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "a"}, "k": key}
	id := str(c.ok(mStartRun, vars), "startRun.id")
	if again := str(c.ok(mStartRun, vars), "startRun.id"); again != id {
		t.Fatalf("idempotent repeat returned %s, want %s", again, id)
	}
	plain := str(c.ok(mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "b"}}), "startRun.id")
	waitRun(t, f.owner, plain, 30*time.Second, "succeeded", "failed")

	const q = `{ auditLogs(first: 1000) { edges { node { action actor actorType targetType targetID requestID metadata } } } }`
	var entries []map[string]any
	for _, n := range edges(f.owner.ok(q, nil), "auditLogs") {
		if n["action"] == "run.start" {
			entries = append(entries, n)
		}
	}
	if len(entries) != 2 {
		t.Fatalf("%d run.start entries, want 2 (one per run started, none for the repeat): %v", len(entries), entries)
	}
	byRun := map[string]map[string]any{}
	for _, e := range entries {
		byRun[str(e, "targetID")] = e
	}
	e := byRun[id]
	if e == nil || e["targetType"] != "Run" || e["actor"] != "user-operator@e2e.test" || e["actorType"] != "user" || str(e, "requestID") == "" {
		t.Fatalf("entry of the keyed run: %v", e)
	}
	if get(e, "metadata.workflowID") != f.workflowID || get(e, "metadata.environmentID") != f.envID ||
		get(e, "metadata.idempotencyKey") != key || get(e, "metadata.versionID") != f.versionID {
		t.Errorf("metadata: %v", e["metadata"])
	}
	if p := byRun[plain]; p == nil || get(p, "metadata.idempotencyKey") != nil {
		t.Errorf("entry of the run without key: %v", p)
	}
}
