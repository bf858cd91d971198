package e2e

import (
	"testing"
	"time"
)

func TestTransformRunSucceeds(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "run")
	wf, _ := deployWorkflow(t, f, "hello", simpleDefinition())
	r := f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"name": "ada"}})
	id := str(r, "startRun.id")
	run := waitRun(t, f.owner, id, 20*time.Second, "succeeded", "failed")
	if run["status"] != "succeeded" || run["output"] != "HELLO ADA" {
		t.Fatalf("run: %v", run)
	}
	types := eventTypes(run)
	if types[0] != "run.queued" || types[len(types)-1] != "run.succeeded" {
		t.Fatalf("events: %v", types)
	}
	for i, e := range run["events"].([]any) {
		if int(get(e, "seq").(float64)) != i+1 {
			t.Fatalf("events not gapless: %v", run["events"])
		}
	}
}
