package runs

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tally"
)

// capRuns sets the tenant's cap on unfinished runs (plan.maxConcurrentRuns).
func (x *h) capRuns(n int) {
	x.t.Helper()
	if err := testDB.Owner.Tenant.UpdateOneID(x.tenantID).SetMaxConcurrentRuns(n).Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		x.t.Fatal(err)
	}
}

// startIn starts a run with an input and a priority.
func (x *h) startIn(wfID string, input map[string]any, priority int) string {
	x.t.Helper()
	var id string
	x.in(func(ctx context.Context, _ *ent.Client) error {
		r, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wfID, EnvironmentID: x.envID, Input: input, Priority: &priority})
		if err != nil {
			return err
		}
		id = r.ID
		return nil
	})
	return id
}

// heldFor lists the runs with held steps for reason.
func (x *h) heldFor(reason string) []string {
	var out []string
	for _, hs := range x.held() {
		if hs.Reason == reason {
			out = append(out, hs.RunID)
		}
	}
	return out
}

// TestRunCapHoldsAndReleasesByPriority: with maxConcurrentRuns 2 the third
// and fourth runs are created queued with their first step held
// (tenant_runs, no ready_at, no task); fair dispatch's release and the sweep
// leave them while two runs are active; when one finishes its transaction
// releases the waiting run with the better priority first, then the older.
func TestRunCapHoldsAndReleasesByPriority(t *testing.T) {
	x := newH(t)
	x.capRuns(2)
	wf := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	a1, a2 := x.start(wf, nil), x.start(wf, nil)
	later := x.startIn(wf, nil, 3)
	urgent := x.startIn(wf, nil, 1)
	sent := x.rec.take()
	if len(tasksOfRun(sent, a1)) != 1 || len(tasksOfRun(sent, a2)) != 1 || len(stepTasks(sent)) != 2 {
		t.Fatalf("sent %v: want a1's and a2's steps only", stepTasks(sent))
	}
	if got := x.heldFor("tenant_runs"); len(got) != 2 || got[0] != later || got[1] != urgent {
		t.Fatalf("held for the tenant's cap %v, want [%s %s]", got, later, urgent)
	}
	for _, id := range []string{later, urgent} {
		if r := x.run(id); r.Status != run.StatusQueued {
			t.Fatalf("held run %s", r.Status)
		}
		if sr := x.step(id, "a"); sr.Status != steprun.StatusQueued || sr.ReadyAt != nil || sr.CurrentAttemptID == nil {
			t.Fatalf("held step: %s readyAt %v", sr.Status, sr.ReadyAt)
		}
	}
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("fair dispatch release: %d, %v", n, err)
	}
	if n, err := x.e.ReleaseRuns(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("sweep at the cap: %d, %v", n, err)
	}
	x.runAll(tasksOfRun(sent, a1))
	if r := x.run(a1); r.Status != run.StatusSucceeded {
		t.Fatalf("a1 %s", r.Status)
	}
	got := x.rec.take()
	if len(tasksOfRun(got, urgent)) != 1 || len(stepTasks(got)) != 1 {
		t.Fatalf("after a1 finished sent %v, want the urgent run's step only", stepTasks(got))
	}
	if held := x.heldFor("tenant_runs"); len(held) != 1 || held[0] != later {
		t.Fatalf("held %v, want the later run", held)
	}
	urgentTasks := got // urgent is active now (its step sent, not yet run)
	x.runAll(tasksOfRun(sent, a2))
	got = x.rec.take()
	if len(tasksOfRun(got, later)) != 1 {
		t.Fatalf("after a2 finished sent %v, want the later run's step", stepTasks(got))
	}
	x.runAll(append(got, urgentTasks...))
	x.drain()
	for _, id := range []string{a1, a2, later, urgent} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
	if len(x.held()) != 0 {
		t.Fatalf("held left: %+v", x.held())
	}
}

// TestRunCapWithKeys: a run held for its concurrency key does not count
// toward the tenant's cap; a run its key lets go while the tenant is at its
// cap stays held, now for the tenant (tenant_runs), and starts when a run
// finishes. The run lock's "tenant has held steps" flag ignores rows held
// for run-level limits (no fair-dispatch release is asked for them).
func TestRunCapWithKeys(t *testing.T) {
	x := newH(t)
	x.capRuns(2)
	wf := x.deploy(keyDef(1, "queue"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	b1 := x.start(wf, map[string]any{"customer": "bolt"})
	a2 := x.start(wf, map[string]any{"customer": "acme"}) // waits for its key
	sent := x.rec.take()
	if got := x.heldFor("key_concurrency"); len(got) != 1 || got[0] != a2 {
		t.Fatalf("held for the key %v, want a2", got)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, _, f, err := lockRunRow(ctx, a2)
		if err != nil {
			return err
		}
		if f.tenantHeld || !f.runCapped {
			t.Errorf("lock flags %+v: want tenantHeld false (only limit-held rows), runCapped true", f)
		}
		return nil
	})
	// a1 ends behind the state machine's back (its release is lost), and a
	// new run takes the free place: the tenant is at its cap again.
	if err := testDB.Owner.Run.UpdateOneID(a1).SetStatus(run.StatusFailed).Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		t.Fatal(err)
	}
	c1 := x.start(wf, map[string]any{"customer": "cora"})
	c1Sent := x.rec.take()
	if len(tasksOfRun(c1Sent, c1)) != 1 {
		t.Fatalf("c1 not sent: %v", stepTasks(c1Sent))
	}
	// The keys' sweep finds acme free but the tenant full: a2 stays held,
	// now for the tenant.
	if n, err := x.e.ReleaseKeys(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("keys' sweep: %d, %v", n, err)
	}
	if got := x.heldFor("tenant_runs"); len(got) != 1 || got[0] != a2 {
		t.Fatalf("held for the tenant %v (all %+v), want a2", got, x.held())
	}
	if len(x.heldFor("key_concurrency")) != 0 {
		t.Fatal("a2 still held for its key")
	}
	x.runAll(tasksOfRun(sent, b1))
	got := x.rec.take()
	if len(tasksOfRun(got, a2)) != 1 {
		t.Fatalf("after b1 finished sent %v, want a2's step", stepTasks(got))
	}
	x.runAll(append(got, c1Sent...))
	x.drain()
	for _, id := range []string{b1, a2, c1} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
}

// TestRunCapSweepRecovers: a run that finished without releasing the next
// waiting one (its transaction was lost) is recovered by the sweep, and a
// cap removed from the plan lets every waiting run go.
func TestRunCapSweepRecovers(t *testing.T) {
	x := newH(t)
	x.capRuns(1)
	wf := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	a1, a2, a3 := x.start(wf, nil), x.start(wf, nil), x.start(wf, nil)
	x.rec.take()
	if got := x.heldFor("tenant_runs"); len(got) != 2 {
		t.Fatalf("held %v, want a2 and a3", got)
	}
	if err := testDB.Owner.Run.UpdateOneID(a1).SetStatus(run.StatusFailed).Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		t.Fatal(err)
	}
	n, err := x.e.ReleaseRuns(context.Background(), x.tenantID)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	got := x.rec.take()
	if len(tasksOfRun(got, a2)) != 1 || len(stepTasks(got)) != 1 {
		t.Fatalf("the sweep sent %v, want a2's step", stepTasks(got))
	}
	if err := testDB.Owner.Tenant.UpdateOneID(x.tenantID).ClearMaxConcurrentRuns().Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		t.Fatal(err)
	}
	if n, err := x.e.ReleaseRuns(context.Background(), x.tenantID); err != nil || n != 1 {
		t.Fatalf("sweep without a cap: %d, %v", n, err)
	}
	x.runAll(append(got, x.rec.take()...))
	x.drain()
	for _, id := range []string{a2, a3} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
}

// TestRunCapCost: a tenant without a cap on runs pays nothing for it; a
// capped tenant pays one statement at a run's start (sluice_runs_active)
// and one at its finish (sluice_release_runs). Each start and finish is
// measured after a warm-up (statements are prepared once per connection).
func TestRunCapCost(t *testing.T) {
	measure := func(capped bool) (start, finish int64) {
		x := newH(t)
		if capped {
			x.capRuns(1000)
		}
		wf := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "1"}))
		for i := 0; i < 3; i++ {
			x.start(wf, nil)
			x.drain()
		}
		var st tally.Tally
		var id string
		err := store.InTenant(tally.With(x.ctx, &st), x.e.client, func(ctx context.Context) error {
			r, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wf, EnvironmentID: x.envID})
			if r != nil {
				id = r.ID
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		ts := tasksOfRun(x.rec.take(), id)
		if len(ts) != 1 {
			t.Fatalf("%d step tasks", len(ts))
		}
		tk := ts[0]
		// The step's transaction finishes the run: filed under "finish".
		before := tally.Snapshot()["finish"]
		if err := x.execute(tk); err != nil {
			t.Fatal(err)
		}
		fin := tally.Snapshot()["finish"].Minus(before)
		if r := x.run(id); r.Status != run.StatusSucceeded || fin.Units != 1 {
			t.Fatalf("run %s, %d finishes counted", r.Status, fin.Units)
		}
		return st.Statements.Load(), fin.Statements
	}
	start, finish := measure(false)
	cStart, cFinish := measure(true)
	t.Logf("statements: startRun %d (capped %d), a one-step run's finishing step %d (capped %d)", start, cStart, finish, cFinish)
	if cStart != start+1 || cFinish != finish+1 {
		t.Fatalf("capped tenant: startRun %d and finish %d statements, want one more than without a cap (%d, %d)", cStart, cFinish, start, finish)
	}
}
