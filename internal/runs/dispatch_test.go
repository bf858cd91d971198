package runs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/heldstep"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/tasks"
)

// held lists the tenant's held steps' run ids, in held order.
func (x *h) held() []*ent.HeldStep {
	x.t.Helper()
	var out []*ent.HeldStep
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		out, err = c.HeldStep.Query().Order(ent.Asc(heldstep.FieldSince), ent.Asc(heldstep.FieldID)).All(ctx)
		return err
	})
	return out
}

// startP starts a run with a priority.
func (x *h) startP(wfID string, priority int) string {
	x.t.Helper()
	var id string
	x.in(func(ctx context.Context, _ *ent.Client) error {
		r, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wfID, EnvironmentID: x.envID, Priority: &priority})
		if err != nil {
			return err
		}
		id = r.ID
		return nil
	})
	return id
}

// TestFairShareHoldsAndReleases: a tenant with share 2 gets two ready steps
// into the queue and the rest wait in Postgres (ready_at cleared, a
// held_steps row, TENANT_SHARE); a delivery of a held step runs nothing; a
// release waits until the queue is half empty and then sends held steps,
// the highest priority first, until every run has succeeded.
func TestFairShareHoldsAndReleases(t *testing.T) {
	x := newH(t)
	x.e.share = 2
	wf := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, x.start(wf, nil))
	}
	urgent := x.startP(wf, 1)
	ids = append(ids, urgent)
	sent := stepTasks(x.rec.take())
	if len(sent) != 2 || sent[0].RunID != ids[0] || sent[1].RunID != ids[1] {
		t.Fatalf("sent %d step tasks (%v), want the first two runs'", len(sent), sent)
	}
	held := x.held()
	if len(held) != 3 {
		t.Fatalf("%d held steps, want 3", len(held))
	}
	for _, hs := range held {
		if hs.Reason != "tenant_share" || hs.StepID != "a" {
			t.Fatalf("held step %+v", hs)
		}
		if sr := x.step(hs.RunID, "a"); sr.Status != steprun.StatusQueued || sr.ReadyAt != nil {
			t.Fatalf("held step row: status %s readyAt %v", sr.Status, sr.ReadyAt)
		}
	}
	if held[2].RunID != urgent || held[2].Priority != 1 {
		t.Fatalf("last held %+v, want the urgent run's with priority 1", held[2])
	}
	// A stray delivery of a held step (its attempt named) runs nothing.
	sr := x.step(held[0].RunID, "a")
	if err := x.execute(tasks.Task{Kind: tasks.KindStep, TenantID: x.tenantID, RunID: sr.RunID, StepID: "a", ID: *sr.CurrentAttemptID}); err != nil {
		t.Fatal(err)
	}
	if got := x.step(held[0].RunID, "a"); got.Status != steprun.StatusQueued || got.ReadyAt != nil {
		t.Fatalf("a held step ran on a stray delivery: %s", got.Status)
	}
	// The queue is full (2 of 2): nothing is released.
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("release with a full queue: %d, %v", n, err)
	}
	x.executeAll(sent)
	// The queue is empty: two are released, the urgent run's first.
	n, err := x.e.ReleaseHeld(context.Background(), x.tenantID)
	if err != nil || n != 2 {
		t.Fatalf("release: %d, %v", n, err)
	}
	released := stepTasks(x.rec.take())
	if len(released) != 2 || !slices.ContainsFunc(released, func(tk tasks.Task) bool { return tk.RunID == urgent }) {
		t.Fatalf("released %v, want the urgent run's step among them", released)
	}
	// Each is its run's only released transform: its delivery claims it
	// without a look first (no sibling can have run it in a batch).
	if slices.ContainsFunc(released, func(tk tasks.Task) bool { return tk.CheckFirst }) {
		t.Fatalf("released %+v: a lone transform marked to check first", released)
	}
	if left := x.held(); len(left) != 1 || left[0].RunID == urgent {
		t.Fatalf("held after the release: %+v, want one step, not the urgent run's", left)
	}
	x.executeAll(released)
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 1 {
		t.Fatalf("last release: %d, %v", n, err)
	}
	x.drain()
	for _, id := range ids {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
	if len(x.held()) != 0 {
		t.Fatal("held steps left")
	}
}

// TestReleasedSiblingTransformsCheckFirst: two transforms of one run held
// and released together may run in one another's batch, so their tasks are
// marked to look before claiming (AttemptRef.CheckFirst); both run once.
func TestReleasedSiblingTransformsCheckFirst(t *testing.T) {
	x := newH(t)
	x.e.share = 2
	wf := x.deploy(def("steps.b.output",
		map[string]any{"id": "a", "type": "transform", "output": "1"},
		map[string]any{"id": "b", "type": "transform", "output": "2"}))
	first, second := x.start(wf, nil), x.start(wf, nil)
	sent := stepTasks(x.rec.take())
	if len(sent) != 2 || sent[0].RunID != first || sent[1].RunID != first {
		t.Fatalf("sent %v, want the first run's two steps", sent)
	}
	if held := x.held(); len(held) != 2 || held[0].RunID != second || held[1].RunID != second {
		t.Fatalf("held %+v, want the second run's two steps", held)
	}
	x.executeAll(sent)
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 2 {
		t.Fatalf("release: %d, %v", n, err)
	}
	released := stepTasks(x.rec.take())
	if len(released) != 2 || !released[0].CheckFirst || !released[1].CheckFirst {
		t.Fatalf("released %+v, want the second run's two steps, each marked to check first", released)
	}
	x.executeAll(released)
	x.drain()
	for _, id := range []string{first, second} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
		for _, step := range []string{"a", "b"} {
			if sr := x.step(id, step); sr.Status != steprun.StatusSucceeded || sr.Attempts != 1 {
				t.Fatalf("run %s step %s: %s after %d attempts", id, step, sr.Status, sr.Attempts)
			}
		}
	}
}

// TestContinuationTakesItsPredecessorsPlace: with a share of 1, a chain's
// next step runs back to back in the same delivery, never held.
func TestContinuationTakesItsPredecessorsPlace(t *testing.T) {
	x := newH(t)
	x.e.share = 1
	wf := x.deploy(def("steps.c.output",
		map[string]any{"id": "a", "type": "transform", "output": "1"},
		map[string]any{"id": "b", "type": "transform", "needs": []any{"a"}, "output": "steps.a.output + 1"},
		map[string]any{"id": "c", "type": "transform", "needs": []any{"b"}, "output": "steps.b.output + 1"}))
	id := x.start(wf, nil)
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded || len(x.held()) != 0 {
		t.Fatalf("run %s, %d held", r.Status, len(x.held()))
	}
}

// TestTenantCapHoldsAClaim: a tenant with maxConcurrentSteps 1 running one
// http step has its next step held at the claim (TENANT_CONCURRENCY), and
// released once the first finishes.
func TestTenantCapHoldsAClaim(t *testing.T) {
	x := newH(t)
	x.e.share = 0 // fair dispatch off: only the cap holds
	if err := testDB.Owner.Tenant.UpdateOneID(x.tenantID).SetMaxConcurrentSteps(1).Exec(privacy.DecisionContext(context.Background(), privacy.Allow)); err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}, 2), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	wf := x.deploy(def("steps.call.output.body", map[string]any{"id": "call", "type": "http",
		"request": map[string]any{"method": "GET", "url": srv.URL + "/x"}}))
	first, second := x.start(wf, nil), x.start(wf, nil)
	sent := stepTasks(x.rec.take())
	if len(sent) != 2 {
		t.Fatalf("sent %d, want 2 (fair dispatch off)", len(sent))
	}
	done := make(chan error, 1)
	go func() { done <- x.execute(sent[0]) }()
	<-entered // the first runs, its claim committed
	if err := x.execute(sent[1]); err != nil {
		t.Fatal(err)
	}
	held := x.held()
	if len(held) != 1 || held[0].RunID != second || held[0].Reason != "tenant_concurrency" {
		t.Fatalf("held %+v, want the second run's step for tenant_concurrency", held)
	}
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("release while the slot is taken: %d, %v", n, err)
	}
	release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if r := x.run(first); r.Status != run.StatusSucceeded {
		t.Fatalf("first run %s", r.Status)
	}
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 1 {
		t.Fatalf("release after the slot freed: %d, %v", n, err)
	}
	// The release is sent under a task id of its own: the held delivery's
	// id may still be taken in the queue when the release comes.
	again := stepTasks(x.rec.take())
	if len(again) != 1 || again[0].ID != sent[1].ID || again[0].Variant == "" {
		t.Fatalf("released %+v, want attempt %s under a task id of its own", again, sent[1].ID)
	}
	go func() { <-entered; release <- struct{}{} }()
	if err := x.execute(again[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	if r := x.run(second); r.Status != run.StatusSucceeded {
		t.Fatalf("second run %s", r.Status)
	}
}

// TestPriorityIsValidated: startRun refuses a priority out of 1..5 with
// VALIDATION at input.priority and starts nothing.
func TestPriorityIsValidated(t *testing.T) {
	x := newH(t)
	wf := x.deploy(def("", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	for _, p := range []int{0, 6, -1} {
		err := x.try(func(ctx context.Context, _ *ent.Client) error {
			_, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wf, EnvironmentID: x.envID, Priority: &p})
			return err
		})
		e, ok := errs.As(err)
		if !ok || e.Code != errs.Validation || !slices.ContainsFunc(e.Problems, func(p errs.Problem) bool { return p.Path == "input.priority" }) {
			t.Fatalf("priority %d: %v", p, err)
		}
	}
	var n int
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		n, err = c.Run.Query().Count(ctx)
		return err
	})
	if n != 0 {
		t.Fatalf("%d runs written", n)
	}
}
