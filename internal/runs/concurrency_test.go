package runs

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/tasks"
)

// keyDef is a one-step workflow limited per input.customer.
func keyDef(limit int, onLimit string) map[string]any {
	d := def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "input.customer"})
	d["input"] = map[string]any{"type": "object", "required": []any{"customer"}, "properties": map[string]any{"customer": map[string]any{"type": "string"}}}
	d["concurrency"] = map[string]any{"limit": limit, "key": "input.customer", "onLimit": onLimit}
	return d
}

// runAll delivers step tasks taken from the recorder.
func (x *h) runAll(ts []tasks.Task) {
	x.t.Helper()
	for _, tk := range stepTasks(ts) {
		if err := x.execute(tk); err != nil {
			x.t.Fatal(err)
		}
	}
}

func tasksOfRun(ts []tasks.Task, runID string) []tasks.Task {
	var out []tasks.Task
	for _, t := range stepTasks(ts) {
		if t.RunID == runID {
			out = append(out, t)
		}
	}
	return out
}

// TestKeyConcurrencyQueues: with limit 1 per customer, a second run of a
// customer is created queued with its first step held (key_concurrency,
// no ready_at, no task) while another customer's run is sent; when the
// first finishes, its transaction releases the second; all succeed.
func TestKeyConcurrencyQueues(t *testing.T) {
	x := newH(t)
	wf := x.deploy(keyDef(1, "queue"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	b1 := x.start(wf, map[string]any{"customer": "bolt"})
	sent := x.rec.take()
	if len(tasksOfRun(sent, a1)) != 1 || len(tasksOfRun(sent, b1)) != 1 || len(tasksOfRun(sent, a2)) != 0 {
		t.Fatalf("sent %v: want a1's and b1's steps, not a2's", stepTasks(sent))
	}
	if r := x.run(a2); r.Status != run.StatusQueued || r.ConcurrencyKey == nil || *r.ConcurrencyKey != "acme" {
		t.Fatalf("a2: %s key %v", r.Status, r.ConcurrencyKey)
	}
	held := x.held()
	if len(held) != 1 || held[0].RunID != a2 || held[0].Reason != "key_concurrency" {
		t.Fatalf("held %+v, want a2's step for key_concurrency", held)
	}
	if sr := x.step(a2, "a"); sr.Status != steprun.StatusQueued || sr.ReadyAt != nil || sr.CurrentAttemptID == nil {
		t.Fatalf("a2's step: %s readyAt %v", sr.Status, sr.ReadyAt)
	}
	// Fair dispatch's release never lets a key's run go.
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("fair dispatch release: %d, %v", n, err)
	}
	// Nor does the sweep while a1 runs.
	if n, err := x.e.ReleaseKeys(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("sweep while the key is full: %d, %v", n, err)
	}
	for _, tk := range tasksOfRun(sent, b1) {
		if err := x.execute(tk); err != nil {
			t.Fatal(err)
		}
	}
	if len(stepTasks(x.rec.take())) != 0 || len(x.held()) != 1 {
		t.Fatal("another customer's run finishing released acme's")
	}
	for _, tk := range tasksOfRun(sent, a1) {
		if err := x.execute(tk); err != nil {
			t.Fatal(err)
		}
	}
	if r := x.run(a1); r.Status != run.StatusSucceeded {
		t.Fatalf("a1 %s", r.Status)
	}
	if len(x.held()) != 0 {
		t.Fatalf("a2 still held after a1 finished: %+v", x.held())
	}
	x.drain()
	for _, id := range []string{a1, a2, b1} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
}

// TestKeyConcurrencyCancelReleases: cancelling the key's running run
// releases the waiting one.
func TestKeyConcurrencyCancelReleases(t *testing.T) {
	x := newH(t)
	wf := x.deploy(keyDef(1, "queue"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	x.rec.take()
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, a1)
		return err
	})
	got := x.rec.take()
	if n := len(tasksOfRun(got, a2)); n != 1 {
		t.Fatalf("a2 sent %d step tasks after a1 was cancelled, want 1", n)
	}
	x.runAll(got)
	x.drain()
	if r := x.run(a2); r.Status != run.StatusSucceeded {
		t.Fatalf("a2 %s", r.Status)
	}
}

// TestKeyConcurrencySweepRecovers: a run that finished without releasing
// its key's next run (its transaction was lost) is recovered by the sweep.
func TestKeyConcurrencySweepRecovers(t *testing.T) {
	x := newH(t)
	wf := x.deploy(keyDef(1, "queue"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	x.rec.take()
	// a1 ends behind the state machine's back: nothing released a2.
	if err := testDB.Owner.Run.UpdateOneID(a1).SetStatus(run.StatusFailed).Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		t.Fatal(err)
	}
	if len(x.held()) != 1 {
		t.Fatal("a2 not held")
	}
	n, err := x.e.ReleaseKeys(context.Background(), x.tenantID)
	if err != nil || n != 1 {
		t.Fatalf("sweep: %d, %v", n, err)
	}
	got := x.rec.take()
	if n := len(tasksOfRun(got, a2)); n != 1 {
		t.Fatalf("a2 sent %d step tasks after the sweep, want 1", n)
	}
	x.runAll(got)
	x.drain()
	if r := x.run(a2); r.Status != run.StatusSucceeded {
		t.Fatalf("a2 %s", r.Status)
	}
}

// TestKeyConcurrencySkipNew: at the limit, skip_new creates the run
// cancelled with error class concurrency_skipped, and sends nothing.
func TestKeyConcurrencySkipNew(t *testing.T) {
	x := newH(t)
	wf := x.deploy(keyDef(1, "skip_new"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	sent := x.rec.take()
	if len(tasksOfRun(sent, a2)) != 0 {
		t.Fatal("a skipped run's step was sent")
	}
	r := x.run(a2)
	if r.Status != run.StatusCancelled || r.ErrorClass == nil || *r.ErrorClass != ClassConcurrencySkipped || r.FinishedAt == nil {
		t.Fatalf("a2 %s class %v", r.Status, r.ErrorClass)
	}
	if sr := x.step(a2, "a"); sr.Status != steprun.StatusCancelled {
		t.Fatalf("a2's step %s", sr.Status)
	}
	for _, tk := range tasksOfRun(sent, a1) {
		if err := x.execute(tk); err != nil {
			t.Fatal(err)
		}
	}
	if r := x.run(a1); r.Status != run.StatusSucceeded {
		t.Fatalf("a1 %s", r.Status)
	}
}

// TestKeyConcurrencyCancelInProgress: at the limit, cancel_in_progress
// cancels the oldest run of the key and starts the new one.
func TestKeyConcurrencyCancelInProgress(t *testing.T) {
	x := newH(t)
	wf := x.deploy(keyDef(1, "cancel_in_progress"))
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	b1 := x.start(wf, map[string]any{"customer": "bolt"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	sent := x.rec.take()
	if len(tasksOfRun(sent, a2)) != 1 {
		t.Fatal("the new run's step was not sent")
	}
	if r := x.run(a1); r.Status != run.StatusCancelled {
		t.Fatalf("a1 %s, want cancelled", r.Status)
	}
	if r := x.run(b1); r.Status == run.StatusCancelled {
		t.Fatal("another customer's run was cancelled")
	}
	x.runAll(sent)
	x.drain()
	for _, id := range []string{a2, b1} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
}
