package e2e

import (
	"fmt"
	"testing"
)

// TestEngineFanOutAndJoin runs wide fan-outs of transform pairs (p_i, then
// q_i which needs it) into a join, three runs at once over the suite's two
// workers. Workers run a run's ready transforms in batches; whatever the
// batching, every step runs exactly once, every event is logged once with
// gapless sequence numbers, and no step starts in the transaction that
// recorded a result it needs: every q_i and the join are made ready by a
// transaction that also runs other ready steps, so a batch that took the
// step it just made ready would show here.
func TestEngineFanOutAndJoin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "eng-fanout")
	// Fewer pairs than a batch (64), so that a batch's query for ready
	// steps sees every queued step, the q_i just made ready included.
	const width = 40
	var steps []map[string]any
	var joinNeeds []any
	for i := 1; i <= width; i++ {
		p, q := fmt.Sprintf("p%d", i), fmt.Sprintf("q%d", i)
		steps = append(steps,
			map[string]any{"id": p, "type": "transform", "output": fmt.Sprintf("input.n * %d", i)},
			map[string]any{"id": q, "type": "transform", "needs": []any{p}, "output": fmt.Sprintf("steps.%s.output + 1", p)})
		joinNeeds = append(joinNeeds, q)
	}
	steps = append(steps, map[string]any{"id": "join", "type": "transform", "needs": joinNeeds,
		"output": fmt.Sprintf("steps.q1.output + steps.q%d.output", width)})
	input := map[string]any{"type": "object", "required": []any{"n"}, "properties": map[string]any{"n": map[string]any{"type": "integer"}}}
	wf, _ := deployWorkflow(t, f, "fanout", engDef(input, "steps.join.output", steps...))

	db := ownerDB(t)
	var ids []string
	for n := 1; n <= 3; n++ {
		ids = append(ids, engStart(t, f.owner, f, wf, map[string]any{"n": n}))
	}
	for i, id := range ids {
		n := i + 1
		run := engFinish(t, f.owner, id, "succeeded")
		if want := float64(n*1 + 1 + n*width + 1); run["output"] != want {
			t.Errorf("run %d output = %v, want %v", n, run["output"], want)
		}
		list, _ := run["steps"].([]any)
		if len(list) != 2*width+1 {
			t.Fatalf("run %d has %d steps, want %d", n, len(list), 2*width+1)
		}
		for _, s := range list {
			st := s.(map[string]any)
			if st["status"] != "succeeded" || st["attempts"] != float64(1) {
				t.Errorf("run %d step %v: status %v after %v attempts", n, st["stepID"], st["status"], st["attempts"])
			}
		}
		events, _ := run["events"].([]any)
		started, succeeded := map[string]int{}, map[string]int{}
		for i, e := range events {
			ev := e.(map[string]any)
			if ev["seq"] != float64(i+1) {
				t.Fatalf("run %d: event %d has seq %v: the log has a gap or a repeat", n, i, ev["seq"])
			}
			step, _ := ev["stepID"].(string)
			switch ev["type"] {
			case "step.started":
				started[step]++
			case "step.succeeded":
				succeeded[step]++
			}
		}
		for _, s := range list {
			id := s.(map[string]any)["stepID"].(string)
			if started[id] != 1 || succeeded[id] != 1 {
				t.Errorf("run %d step %s: started %d times, succeeded %d times; want once each", n, id, started[id], succeeded[id])
			}
		}
		// xmin names the transaction that inserted an event: a step's start
		// must never share it with the result of a step it needs.
		var shared int
		if err := db.QueryRow(`SELECT count(*) FROM run_events d JOIN run_events s ON s.run_id = d.run_id AND s.xmin = d.xmin
			WHERE d.run_id = $1 AND d.type = 'step.started' AND s.type = 'step.succeeded'
			  AND ((d.step_id LIKE 'q%' AND s.step_id = 'p' || substr(d.step_id, 2)) OR (d.step_id = 'join' AND s.step_id LIKE 'q%'))`, id).Scan(&shared); err != nil {
			t.Fatal(err)
		}
		if shared != 0 {
			t.Errorf("run %d: %d steps started in the transaction that recorded a result they need", n, shared)
		}
		// And batching did happen: siblings share transactions.
		var txs int
		if err := db.QueryRow(`SELECT count(DISTINCT xmin::text) FROM run_events WHERE run_id = $1 AND type = 'step.succeeded' AND step_id LIKE 'p%'`, id).Scan(&txs); err != nil {
			t.Fatal(err)
		}
		if txs >= width {
			t.Errorf("run %d: %d transactions recorded %d sibling results: no batching", n, txs, width)
		}
		t.Logf("run %d: %d sibling results in %d transactions", n, width, txs)
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
