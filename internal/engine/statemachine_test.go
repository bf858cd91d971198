package engine

import (
	"testing"

	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
)

// TestClaimFinishSettle: a run's first step is queued with a task; a
// delivery claims it, finishes it, runs its dependent and settles the run
// with its output.
func TestClaimFinishSettle(t *testing.T) {
	t.Parallel()
	x := newH(t)
	wf := x.deploy(def("steps.b.output",
		map[string]any{"id": "a", "type": "transform", "output": "input.n + 1.0"},
		map[string]any{"id": "b", "type": "transform", "needs": []any{"a"}, "output": "steps.a.output * 10.0"},
	))
	id := x.start(wf, map[string]any{"n": 4})
	if r := x.run(id); r.Status != run.StatusQueued && r.Status != run.StatusRunning {
		t.Fatalf("new run is %s", r.Status)
	}
	a := x.step(id, "a")
	if a.Status != steprun.StatusQueued || a.CurrentAttemptID == nil || a.Attempts != 1 {
		t.Fatalf("step a after start: %+v", a)
	}
	if b := x.step(id, "b"); b.Status != steprun.StatusPending {
		t.Fatalf("step b after start: %s", b.Status)
	}
	tasks := x.rec.take()
	if len(tasks) != 1 || tasks[0].Kind != TaskStep || tasks[0].StepID != "a" || tasks[0].ID != *a.CurrentAttemptID || tasks[0].RunID != id {
		t.Fatalf("dispatched %+v", tasks)
	}
	if err := x.execute(tasks[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded || r.FinishedAt == nil {
		t.Fatalf("run: %+v", r)
	}
	if string(r.Output) != "50" {
		t.Errorf("output %s", r.Output)
	}
	for _, s := range []string{"a", "b"} {
		sr := x.step(id, s)
		at := x.attempts(id, s)
		if sr.Status != steprun.StatusSucceeded || len(at) != 1 || at[0].Status != stepattempt.StatusSucceeded {
			t.Errorf("step %s: %s, attempts %d", s, sr.Status, len(at))
		}
	}
	x.wantLog(id, "run.queued", "step.started a#1", "run.started", "step.succeeded a#1", "step.started b#1", "step.succeeded b#1", "run.succeeded")
	// A duplicate delivery of a finished attempt changes nothing.
	before := len(x.events(id))
	if err := x.execute(tasks[0]); err != nil {
		t.Fatal(err)
	}
	if n := len(x.events(id)); n != before {
		t.Errorf("duplicate delivery wrote %d events", n-before)
	}
}
