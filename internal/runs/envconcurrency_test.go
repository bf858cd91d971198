package runs

import (
	"context"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
)

// TestEnvConcurrencyOverride: an environment's concurrency setting applies
// to a workflow whose definition has none: a customer's second run waits
// for its key, the first one's finish releases it (sluice_release_key reads
// the override), and once the override is removed the keys' sweep lets
// every waiting run go.
func TestEnvConcurrencyOverride(t *testing.T) {
	x := newH(t)
	d := def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "input.customer"})
	d["input"] = map[string]any{"type": "object", "required": []any{"customer"}, "properties": map[string]any{"customer": map[string]any{"type": "string"}}}
	wf := x.deploy(d)
	var id string
	x.in(func(ctx context.Context, c *ent.Client) error {
		o, err := c.WorkflowConcurrency.Create().SetWorkflowID(wf).SetEnvironmentID(x.envID).SetRunLimit(1).
			SetKey("input.customer").SetUpdatedBy("test").Save(ctx)
		if o != nil {
			id = o.ID
		}
		return err
	})
	a1 := x.start(wf, map[string]any{"customer": "acme"})
	a2 := x.start(wf, map[string]any{"customer": "acme"})
	a3 := x.start(wf, map[string]any{"customer": "acme"})
	b1 := x.start(wf, map[string]any{"customer": "bolt"})
	sent := x.rec.take()
	if len(tasksOfRun(sent, a1)) != 1 || len(tasksOfRun(sent, b1)) != 1 || len(stepTasks(sent)) != 2 {
		t.Fatalf("sent %v, want a1's and b1's steps", stepTasks(sent))
	}
	if got := x.heldFor("key_concurrency"); len(got) != 2 || got[0] != a2 || got[1] != a3 {
		t.Fatalf("held for the key %v, want a2 and a3", got)
	}
	x.runAll(tasksOfRun(sent, a1))
	got := x.rec.take()
	if len(tasksOfRun(got, a2)) != 1 || len(stepTasks(got)) != 1 {
		t.Fatalf("after a1 sent %v, want a2's step", stepTasks(got))
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		return c.WorkflowConcurrency.DeleteOneID(id).Exec(ctx)
	})
	if n, err := x.e.ReleaseKeys(context.Background(), x.tenantID); err != nil || n != 1 {
		t.Fatalf("keys' sweep without a limit: %d, %v", n, err)
	}
	x.runAll(append(got, append(x.rec.take(), tasksOfRun(sent, b1)...)...))
	x.drain()
	for _, id := range []string{a1, a2, a3, b1} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
}
