package runs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/tasks"
)

// Workflow steps in the state machine: the wake-up a finished child sends
// its parent is durable in Postgres (the reconciler sends it again when it
// is lost), and the depth limit holds at run time when versions published
// one by one nest deeper than publish could see.

// children reads the runs whose parent is runID.
func (x *h) children(runID string) []*ent.Run {
	x.t.Helper()
	var out []*ent.Run
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.Run.Query().Where(run.ParentRunID(runID)).All(ctx)
		return err
	})
	return out
}

// stepTasksOf are the step tasks among ts for stepID of runID.
func stepTasksOf(ts []tasks.Task, runID, stepID string) []tasks.Task {
	var out []tasks.Task
	for _, t := range stepTasks(ts) {
		if t.RunID == runID && t.StepID == stepID {
			out = append(out, t)
		}
	}
	return out
}

// TestChildWakeUpLostIsReconciled: a child that finishes sends its
// parent's step a task; with that task lost, the reconciler finds the
// waiting step from Postgres and the parent takes the child's outcome (a
// cancelled child: class cancelled).
func TestChildWakeUpLostIsReconciled(t *testing.T) {
	x := newH(t)
	child := x.deploy(def("", map[string]any{"id": "hold", "type": "wait", "event": "never.sent", "timeout": "1h"}))
	parent := x.deploy(def("",
		map[string]any{"id": "enrich", "type": "workflow", "workflow": child},
		map[string]any{"id": "after", "type": "transform", "needs": []any{"enrich"}, "output": "1"}))
	id := x.start(parent, nil)
	x.drain()
	if r := x.run(id); r.Status != run.StatusWaiting {
		t.Fatalf("parent %s", r.Status)
	}
	kids := x.children(id)
	if len(kids) != 1 || kids[0].Depth != 2 || *kids[0].ParentStepID != "enrich" || kids[0].Status != run.StatusWaiting {
		t.Fatalf("children: %+v", kids)
	}
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepTasksOf(due, id, "enrich"); len(got) != 0 {
		t.Fatalf("a waiting step with a running child is due: %v", got)
	}

	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, kids[0].ID)
		return err
	})
	sent := x.rec.take()
	if got := stepTasksOf(sent, id, "enrich"); len(got) != 1 || got[0].ID != *x.step(id, "enrich").CurrentAttemptID {
		t.Fatalf("the child's end sent the parent %v", sent)
	}
	// Lost: the parent still waits.
	if sr := x.step(id, "enrich"); sr.Status != steprun.StatusWaiting {
		t.Fatalf("parent step %s without its task", sr.Status)
	}
	x.clock.Advance(5 * time.Second)
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again := stepTasksOf(due, id, "enrich")
	if len(again) != 1 {
		t.Fatalf("due: %v", due)
	}
	if err := x.execute(again[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	r := x.run(id)
	sr := x.step(id, "enrich")
	if r.Status != run.StatusFailed || *r.ErrorClass != "cancelled" || sr.Status != steprun.StatusFailed || *sr.ErrorClass != "cancelled" ||
		!strings.Contains(*sr.ErrorMessage, kids[0].ID) {
		t.Fatalf("parent %s %v, step %s %v %v", r.Status, r.ErrorClass, sr.Status, sr.ErrorClass, sr.ErrorMessage)
	}
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := stepTasksOf(due, id, "enrich"); len(got) != 0 {
		t.Errorf("still due after the step finished: %v", got)
	}
}

// TestChildDepthAtRunTime: publish sees each version's chain through the
// latest published versions below it; deepening the bottom of a chain one
// version at a time makes a chain of 6 that each publish allowed. The run
// at depth 5 fails its workflow step, and the failure climbs to the top.
func TestChildDepthAtRunTime(t *testing.T) {
	x := newH(t)
	leaf := def("", map[string]any{"id": "a", "type": "transform", "output": "1"})
	calls := func(wf string) map[string]any {
		return def("steps.call.output", map[string]any{"id": "call", "type": "workflow", "workflow": wf})
	}
	// newVersion publishes and deploys a new version of wf.
	newVersion := func(wf string, d map[string]any) {
		x.in(func(ctx context.Context, _ *ent.Client) error {
			v, err := x.ctl.CreateWorkflowVersion(ctx, wf, d)
			if err != nil {
				return err
			}
			if _, err := x.ctl.PublishWorkflowVersion(ctx, v.ID); err != nil {
				return err
			}
			_, err = x.ctl.DeployWorkflowVersion(ctx, v.ID, x.envID)
			return err
		})
	}
	chain := []string{x.deploy(leaf)} // the top
	for i := 1; i < 6; i++ {
		next := x.deploy(leaf)
		newVersion(chain[i-1], calls(next)) // the chain's depth is i+1, its publish saw 2
		chain = append(chain, next)
	}
	id := x.start(chain[0], nil)
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusFailed || *r.ErrorClass != "permanent" {
		t.Fatalf("top run %s %v", r.Status, r.ErrorClass)
	}
	// Down the chain to the run at depth 5.
	cur := r
	for d := 2; d <= 5; d++ {
		kids := x.children(cur.ID)
		if len(kids) != 1 || kids[0].Depth != d {
			t.Fatalf("depth %d: %+v", d, kids)
		}
		cur = kids[0]
	}
	if kids := x.children(cur.ID); len(kids) != 0 {
		t.Fatalf("a run at depth 6 started: %+v", kids)
	}
	sr := x.step(cur.ID, "call")
	if sr.Status != steprun.StatusFailed || *sr.ErrorClass != "permanent" || !strings.Contains(*sr.ErrorMessage, "at most 5 deep") {
		t.Errorf("depth 5 step: %s %v %v", sr.Status, sr.ErrorClass, sr.ErrorMessage)
	}
}

// TestChildResumeAndFailureCascade: resuming a parent whose workflow step
// failed starts a new child (the next attempt's); a parent failing at
// another step cancels its waiting child.
func TestChildResumeAndFailureCascade(t *testing.T) {
	x := newH(t)
	child := x.deploy(def("", map[string]any{"id": "hold", "type": "wait", "event": "never.sent", "timeout": "1h"}))
	parent := x.deploy(def("", map[string]any{"id": "enrich", "type": "workflow", "workflow": child}))
	id := x.start(parent, nil)
	x.drain()
	first := x.children(id)
	if len(first) != 1 {
		t.Fatalf("children: %+v", first)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, first[0].ID)
		return err
	})
	x.drain()
	if r := x.run(id); r.Status != run.StatusFailed {
		t.Fatalf("parent %s", r.Status)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.ResumeRun(ctx, id)
		return err
	})
	x.drain()
	kids := x.children(id)
	if len(kids) != 2 || x.run(id).Status != run.StatusWaiting {
		t.Fatalf("after resume: parent %s, children %+v", x.run(id).Status, kids)
	}
	for _, k := range kids {
		want := run.StatusWaiting
		if k.ID == first[0].ID {
			want = run.StatusCancelled
		}
		if k.Status != want {
			t.Errorf("child %s is %s, want %s", k.ID, k.Status, want)
		}
	}

	// Another step fails while the child waits: the child is cancelled.
	parent2 := x.deploy(def("",
		map[string]any{"id": "enrich", "type": "workflow", "workflow": child},
		map[string]any{"id": "boom", "type": "transform", "output": "int(input.s)"}))
	id2 := x.start(parent2, map[string]any{"s": "x"})
	x.drain()
	r := x.run(id2)
	kids = x.children(id2)
	if r.Status != run.StatusFailed || *r.FailedStepID != "boom" || len(kids) != 1 {
		t.Fatalf("parent %s %v, children %+v", r.Status, r.FailedStepID, kids)
	}
	if c := x.run(kids[0].ID); c.Status != run.StatusCancelled || !strings.Contains(*c.ErrorMessage, id2) {
		t.Errorf("child %s %v", c.Status, c.ErrorMessage)
	}
	if sr := x.step(id2, "enrich"); sr.Status != steprun.StatusCancelled {
		t.Errorf("workflow step %s", sr.Status)
	}
}
