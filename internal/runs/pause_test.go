package runs

import (
	"context"
	"slices"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/workflowpause"
	"github.com/sluicehq/sluice/internal/errs"
)

func (x *h) pause(wfID string, mode workflowpause.Mode) {
	x.t.Helper()
	x.in(func(ctx context.Context, c *ent.Client) error {
		return c.WorkflowPause.Create().SetWorkflowID(wfID).SetEnvironmentID(x.envID).SetMode(mode).SetReason("test").SetPausedBy("user_owner").Exec(ctx)
	})
}

// resume deletes the pause and returns how many held steps DispatchHeld sent.
func (x *h) resume(wfID string) int {
	x.t.Helper()
	var n int
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		if _, err = c.WorkflowPause.Delete().Where(workflowpause.WorkflowID(wfID)).Exec(ctx); err != nil {
			return err
		}
		n, err = x.e.DispatchHeld(ctx, x.tenantID, wfID, x.envID)
		return err
	})
	return n
}

// A delivery that arrives after its workflow was paused starts nothing and
// sends nothing; the reconciler leaves the held step alone; resume sends
// it and the run finishes.
func TestPauseHoldsADeliveredStep(t *testing.T) {
	x := newH(t)
	wf := x.deploy(def("steps.b.output",
		map[string]any{"id": "a", "type": "transform", "output": "input.n + 1"},
		map[string]any{"id": "b", "type": "transform", "needs": []any{"a"}, "output": "steps.a.output * 10"}))
	id := x.start(wf, map[string]any{"n": 1})
	sent := stepTasks(x.rec.take())
	if len(sent) != 1 {
		t.Fatalf("startRun sent %d step tasks, want 1", len(sent))
	}
	x.pause(wf, workflowpause.ModeQueue)
	if err := x.execute(sent[0]); err != nil {
		t.Fatal(err)
	}
	if got := stepTasks(x.rec.take()); len(got) != 0 {
		t.Fatalf("a paused run sent %v", got)
	}
	if sr := x.step(id, "a"); sr.Status != "queued" {
		t.Fatalf("step a is %s while paused, want queued", sr.Status)
	}
	if log := x.log(id); slices.Contains(log, "step.started a#1") {
		t.Fatalf("step a started while paused: %v", log)
	}
	x.clock.Advance(stale) // past any grace
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range due {
		if d.RunID == id {
			t.Fatalf("the reconciler sends a held step: %+v", d)
		}
	}
	if n := x.resume(wf); n != 1 {
		t.Fatalf("DispatchHeld sent %d steps, want 1", n)
	}
	x.drain()
	if r := x.run(id); r.Status != "succeeded" {
		t.Fatalf("run after resume: %s %v", r.Status, x.log(id))
	}
}

// Under QUEUE a new run is created queued with nothing sent; under REJECT
// startRun is CONFLICT and writes nothing.
func TestPauseStartRun(t *testing.T) {
	x := newH(t)
	wf := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "input.n + 1"}))
	x.pause(wf, workflowpause.ModeQueue)
	id := x.start(wf, map[string]any{"n": 1})
	if got := stepTasks(x.rec.take()); len(got) != 0 {
		t.Fatalf("a run started while paused sent %v", got)
	}
	if r := x.run(id); r.Status != "queued" {
		t.Fatalf("run started while paused is %s", r.Status)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		_, err := c.WorkflowPause.Update().Where(workflowpause.WorkflowID(wf)).SetMode(workflowpause.ModeReject).Save(ctx)
		return err
	})
	err := x.try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wf, EnvironmentID: x.envID, Input: map[string]any{"n": 2}})
		return err
	})
	if errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("startRun under REJECT: %v, want CONFLICT", err)
	}
	var n int
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		n, err = c.Run.Query().Count(ctx)
		return err
	})
	if n != 1 {
		t.Fatalf("%d runs after a refused start, want 1", n)
	}
	if sent := x.resume(wf); sent != 1 {
		t.Fatalf("DispatchHeld sent %d, want 1", sent)
	}
	x.drain()
	if r := x.run(id); r.Status != "succeeded" {
		t.Fatalf("run after resume: %s", r.Status)
	}
}
