package e2e

import (
	"strings"
	"testing"
)

// TestEngineRunIsolation: another tenant's owner can neither see nor touch
// A's runs and approvals (every answer identical to one about an id that
// never existed), A's viewers cannot act on runs, and A's run is unaffected.
func TestEngineRunIsolation(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "engiso-a"), newFixture(t, "engiso-b")
	def := engDef(nil, "steps.done.output",
		map[string]any{"id": "prep", "type": "transform", "output": "'ok'"},
		engApproval("review", "1h", "reject", "prep"),
		map[string]any{"id": "done", "type": "transform", "needs": []any{"review"}, "output": "steps.prep.output + '!'"})
	wfA, _ := deployWorkflow(t, a, "gated", def)
	wfB, _ := deployWorkflow(t, b, "gated", def)
	runA := engStart(t, a.owner, a, wfA, nil)
	aprA := engPendingApproval(t, a.owner, runA)
	waitRun(t, a.owner, runA, engWait, "waiting")
	// B has a run and approval of its own, so its lists are not trivially empty.
	runB := engStart(t, b.owner, b, wfB, nil)
	aprB := engPendingApproval(t, b.owner, runB)
	before := engRun(t, a.owner, runA)

	ownerB := isoClient(t, b, 1)
	t.Run("read", func(t *testing.T) {
		for _, id := range []string{runA, aprA} {
			r := isoSame(t, ownerB, `query($id: ID!) { node(id: $id) { id __typename } }`, id)
			if len(r.Errors) > 0 || r.Data == nil || get(r.Data, "node") != nil {
				t.Errorf("B reads A's %s: %s", id, r.Raw)
			}
		}
		r := ownerB.do(`{ runs(first: 100) { totalCount edges { node { id } } } approvals(first: 100) { totalCount edges { node { id runID } } } }`, nil)
		if len(r.Errors) > 0 {
			t.Fatalf("lists: %s", r.Raw)
		}
		for _, id := range []string{runA, aprA, wfA, a.tenantID} {
			if strings.Contains(r.Raw, id) {
				t.Errorf("B's lists mention A's %s: %s", id, r.Raw)
			}
		}
		if !strings.Contains(r.Raw, runB) || !strings.Contains(r.Raw, aprB) || get(r.Data, "runs.totalCount") != float64(1) || get(r.Data, "approvals.totalCount") != float64(1) {
			t.Errorf("B's lists do not show exactly B's own run and approval: %s", r.Raw)
		}
		r = ownerB.do(`query($r: ID!) { approvals(where: {runID: $r}) { totalCount } runs(where: {id: $r}) { totalCount } }`, map[string]any{"r": runA})
		if get(r.Data, "approvals.totalCount") != float64(0) || get(r.Data, "runs.totalCount") != float64(0) {
			t.Errorf("B filters to A's run: %s", r.Raw)
		}
		if r := ownerB.ok(qEngDeadLetter, nil); len(get(r, "deadLetter").([]any)) != 0 {
			t.Errorf("B's dead letter: %v", r)
		}
	})

	t.Run("mutate", func(t *testing.T) {
		for _, m := range []struct{ name, query, id string }{
			{"cancelRun", mEngCancel, runA},
			{"resumeRun", mEngResume, runA},
			{"replayRun", `mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`, runA},
			{"replayRun live", `mutation($id: ID!) { replayRun(input: {runID: $id}) { id } }`, runA},
			{"decideApproval approve", `mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id } }`, aprA},
			{"decideApproval reject", `mutation($id: ID!) { decideApproval(input: {id: $id, decision: REJECT, comment: "no"}) { id } }`, aprA},
		} {
			r := isoSame(t, ownerB, m.query, m.id)
			if r.Code() != "NOT_FOUND" {
				t.Errorf("B %s on A's %s: %s", m.name, m.id, r.Raw)
			}
		}
		if n := get(ownerB.ok(`{ runs { totalCount } }`, nil), "runs.totalCount"); n != float64(1) {
			t.Errorf("B's refused replays created runs: %v", n)
		}
	})

	t.Run("viewer of A", func(t *testing.T) {
		viewer := newClient(t, 0, token(t, a.tenantID, "viewer"))
		// A viewer can read the run...
		if d := viewer.ok(qEngRun, map[string]any{"id": runA}); str(d, "node.id") != runA {
			t.Fatalf("viewer cannot read A's run: %v", d)
		}
		// ...but not act on it.
		viewer.fail("FORBIDDEN", mStartRun, map[string]any{"w": wfA, "e": a.envID, "i": map[string]any{}})
		viewer.fail("FORBIDDEN", mEngCancel, map[string]any{"id": runA})
		viewer.fail("FORBIDDEN", mEngResume, map[string]any{"id": runA})
		viewer.fail("FORBIDDEN", mEngReplay, map[string]any{"id": runA, "m": "SANDBOX"})
		viewer.fail("FORBIDDEN", mEngDecide, map[string]any{"id": aprA, "d": "APPROVE"})
		viewer.fail("FORBIDDEN", mEngDecide, map[string]any{"id": aprA, "d": "REJECT"})
		// So can an API key with the viewer role.
		key := newClient(t, 1, a.apiKeyToken)
		key.fail("FORBIDDEN", mEngDecide, map[string]any{"id": aprA, "d": "APPROVE"})
		key.fail("FORBIDDEN", mEngCancel, map[string]any{"id": runA})
	})

	// A's run is exactly as it was, and still works.
	after := engRun(t, a.owner, runA)
	if after["status"] != "waiting" || len(after["events"].([]any)) != len(before["events"].([]any)) {
		t.Fatalf("A's run changed: before %v\nafter %v", eventTypes(before), eventTypes(after))
	}
	if n := get(a.owner.ok(`{ runs { totalCount } }`, nil), "runs.totalCount"); n != float64(1) {
		t.Errorf("A's runs: %v", n)
	}
	if got := engPendingApproval(t, a.owner, runA); got != aprA {
		t.Fatalf("A's pending approval: %s", got)
	}
	a.owner.ok(mEngDecide, map[string]any{"id": aprA, "d": "APPROVE"})
	if run := engFinish(t, a.owner, runA, "succeeded"); run["output"] != "ok!" || get(stepOf(run, "review"), "output.decidedBy") != "user-owner@e2e.test" {
		t.Errorf("A's run after approval: %v", run)
	}
}
