package e2e

import (
	"fmt"
	"testing"
)

// TestEngineFanOutAndJoin runs wide fan-outs of transforms into a join, three
// runs at once over the suite's two workers. Workers run ready sibling
// transforms of a run in batches; whatever the batching, every step runs
// exactly once, every event is logged once with gapless sequence numbers,
// and the join starts only after every step it needs has succeeded.
func TestEngineFanOutAndJoin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-fanout")
	const width = 150
	var steps []map[string]any
	var needs []any
	for i := 1; i <= width; i++ {
		id := fmt.Sprintf("p%d", i)
		steps = append(steps, map[string]any{"id": id, "type": "transform", "output": fmt.Sprintf("input.n * %d.0", i)})
		needs = append(needs, id)
	}
	steps = append(steps, map[string]any{"id": "join", "type": "transform", "needs": needs,
		"output": fmt.Sprintf("steps.p1.output + steps.p%d.output", width)})
	input := map[string]any{"type": "object", "required": []any{"n"}, "properties": map[string]any{"n": map[string]any{"type": "integer"}}}
	wf, _ := deployWorkflow(t, f, "fanout", engDef(input, "steps.join.output", steps...))

	var ids []string
	for n := 1; n <= 3; n++ {
		ids = append(ids, engStart(t, f.owner, f, wf, map[string]any{"n": n}))
	}
	for i, id := range ids {
		n := i + 1
		run := engFinish(t, f.owner, id, "succeeded")
		if want := float64(n + n*width); run["output"] != want {
			t.Errorf("run %d output = %v, want %v", n, run["output"], want)
		}
		list, _ := run["steps"].([]any)
		if len(list) != width+1 {
			t.Fatalf("run %d has %d steps, want %d", n, len(list), width+1)
		}
		for _, s := range list {
			st := s.(map[string]any)
			if st["status"] != "succeeded" || st["attempts"] != float64(1) {
				t.Errorf("run %d step %v: status %v after %v attempts", n, st["stepID"], st["status"], st["attempts"])
			}
		}
		events, _ := run["events"].([]any)
		started, succeeded := map[string]int{}, map[string]int{}
		lastNeed, joinStart := 0.0, 0.0
		for i, e := range events {
			ev := e.(map[string]any)
			if ev["seq"] != float64(i+1) {
				t.Fatalf("run %d: event %d has seq %v: the log has a gap or a repeat", n, i, ev["seq"])
			}
			step, _ := ev["stepID"].(string)
			switch ev["type"] {
			case "step.started":
				started[step]++
				if step == "join" {
					joinStart = ev["seq"].(float64)
				}
			case "step.succeeded":
				succeeded[step]++
				if step != "join" {
					lastNeed = max(lastNeed, ev["seq"].(float64))
				}
			}
		}
		for _, s := range append(needs, "join") {
			if started[s.(string)] != 1 || succeeded[s.(string)] != 1 {
				t.Errorf("run %d step %s: started %d times, succeeded %d times; want once each", n, s, started[s.(string)], succeeded[s.(string)])
			}
		}
		if joinStart <= lastNeed {
			t.Errorf("run %d: join started at seq %v, before its last need succeeded (seq %v)", n, joinStart, lastNeed)
		}
	}
}

// TestEngineRunWithoutStepCounts covers runs created before the run row kept
// its step counts: such a run settles from its steps, finishes normally, and
// keeps counts from then on.
func TestEngineRunWithoutStepCounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-counts")
	prep := map[string]any{"id": "prep", "type": "transform", "output": "'ready'"}
	done := map[string]any{"id": "done", "type": "transform", "needs": []any{"review"}, "output": "steps.prep.output + '!'"}
	wf, _ := deployWorkflow(t, f, "counts", engDef(nil, "steps.done.output", prep, engApproval("review", "1h", "reject", "prep"), done))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	runID := engStart(t, operator, f, wf, map[string]any{})
	apr := engPendingApproval(t, operator, runID)

	db := ownerDB(t)
	var counts string
	if err := db.QueryRow(`SELECT step_counts::text FROM runs WHERE id = $1`, runID).Scan(&counts); err != nil {
		t.Fatal(err)
	}
	if counts != `{"pending": 1, "waiting": 1, "succeeded": 1}` {
		t.Fatalf("step_counts while waiting = %s", counts)
	}
	// As a run from before step counts were kept.
	if _, err := db.Exec(`UPDATE runs SET step_counts = NULL WHERE id = $1`, runID); err != nil {
		t.Fatal(err)
	}
	operator.ok(mEngDecide, map[string]any{"id": apr, "d": "APPROVE", "c": ""})
	run := engFinish(t, f.owner, runID, "succeeded")
	if run["output"] != "ready!" {
		t.Fatalf("run output = %v", run["output"])
	}
	if err := db.QueryRow(`SELECT step_counts::text FROM runs WHERE id = $1`, runID).Scan(&counts); err != nil {
		t.Fatal(err)
	}
	if counts != `{"succeeded": 3}` {
		t.Fatalf("step_counts after the run = %s, want every step succeeded", counts)
	}
}
