package e2e

import (
	"testing"
	"time"
)

const qQueueStats = `query($w: ID, $e: ID) { queueStats(workflowID: $w, environmentID: $e) { at
  total { runsQueued runsRunning runsWaiting stepsReady approvalsOpen oldestApprovalAt oldestApprovalAgeSeconds }
  groups { workflowID environmentID runsWaiting approvalsOpen oldestApprovalAt oldestApprovalAgeSeconds } } }`

// TestQueueStats reads a tenant's backlog through GraphQL: an open approval
// shows as a waiting run with an open approval and its age, by workflow
// and environment; a key of another environment and another tenant see
// none of it; a wrong id is VALIDATION at its argument.
func TestQueueStats(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "backlog")
	wf, _ := deployWorkflow(t, f, "gated", engDef(nil, "", engApproval("gate", "1h", "")))
	run := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	waitRun(t, f.owner, run, 30*time.Second, "waiting")

	viewerTok := newClient(t, 1, token(t, f.tenantID, "viewer"))
	got := viewerTok.ok(qQueueStats, map[string]any{"w": wf})
	groups := get(got, "queueStats.groups").([]any)
	if len(groups) != 1 || str(groups[0], "workflowID") != wf || str(groups[0], "environmentID") != f.envID ||
		get(groups[0], "runsWaiting") != float64(1) || get(groups[0], "approvalsOpen") != float64(1) ||
		get(groups[0], "oldestApprovalAt") == nil {
		t.Fatalf("queueStats groups: %v", groups)
	}
	if get(got, "queueStats.total.approvalsOpen") != float64(1) || get(got, "queueStats.total.oldestApprovalAgeSeconds").(float64) < 0 {
		t.Fatalf("queueStats total: %v", get(got, "queueStats.total"))
	}

	// A key of production sees nothing of development.
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "prod", roles: [VIEWER], environmentID: $e}) { token } }`, map[string]any{"e": f.prodEnvID})
	prod := newClient(t, 1, str(key, "createAPIKey.token"))
	if g := get(prod.ok(qQueueStats, nil), "queueStats.groups").([]any); len(g) != 0 {
		t.Fatalf("a production key reads development's backlog: %v", g)
	}
	prod.fail("NOT_FOUND", qQueueStats, map[string]any{"e": f.envID})

	// Another tenant: nothing, even asking for this workflow.
	other := newFixture(t, "backlog-b")
	if g := get(other.owner.ok(qQueueStats, map[string]any{"w": wf}), "queueStats.groups").([]any); len(g) != 0 {
		t.Fatalf("another tenant reads this backlog: %v", g)
	}
	r := f.owner.fail("VALIDATION", qQueueStats, map[string]any{"w": run})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "workflowID" {
		t.Errorf("VALIDATION field %v, want workflowID: %s", p, r.Raw)
	}
}
