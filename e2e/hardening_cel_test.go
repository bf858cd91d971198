package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// aliasBomb is cheap for CEL's cost limit (a few operations) but ten
// million values once converted or formatted: ten aliases of one list.
const aliasBomb = `cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], m))`

// A transform whose output expands aliases fails its step with class
// `limit` within seconds; the worker survives and runs the next run.
func TestTransformOutputBombFailsStep(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "celbomb")
	wf, _ := deployWorkflow(t, f, "bomb", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "boom", "type": "transform", "output": map[string]any{"big": aliasBomb}},
		},
	})
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	// How fast the cap stops it is the benchmark's to say (a loaded machine
	// slows any evaluation); waitRun bounds it.
	run := waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "limit" {
		t.Fatalf("run %s, error %v; want failed with class limit", run["status"], run["error"])
	}
	if msg := str(run, "error.message"); !strings.Contains(msg, "limit exceeded") || !strings.Contains(msg, "1000000 values") {
		t.Errorf("message %q should say which cap was passed", msg)
	}
	if step := stepOf(run, "boom"); step["status"] != "failed" || step["output"] != nil {
		t.Errorf("step: %v", step)
	}
	// Workers are alive: a plain run still goes through.
	wf2, _ := deployWorkflow(t, f, "after-bomb", simpleDefinition())
	id2 := str(f.owner.ok(mStartRun, map[string]any{"w": wf2, "e": f.envID, "i": map[string]any{"name": "x"}}), "startRun.id")
	if r := waitRun(t, f.owner, id2, 30*time.Second, "succeeded", "failed"); r["status"] != "succeeded" {
		t.Fatalf("run after the bomb: %v", r)
	}
}

// A transform output may hold at most 8 MiB even when every expression in
// it is small enough on its own.
func TestTransformOutputSizeCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "celsize")
	// 7.8 MB from 30,000 joins of 260 characters: cheap enough to stay far
	// inside the 2 s evaluation limit on a busy machine.
	leaf := `lists.range(30000).map(x, '` + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 10) + `').join('')`
	wf, _ := deployWorkflow(t, f, "size", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "big", "type": "transform", "output": map[string]any{"a": leaf, "b": leaf}},
		},
	})
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	run := waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "limit" || !strings.Contains(str(run, "error.message"), "8 MiB") {
		t.Fatalf("run %s, error %v; want failed with class limit naming 8 MiB", run["status"], run["error"])
	}
}

// A run's step outputs may take at most 64 MiB together: nine outputs of
// 7.8 MB each (each under its own cap) fail the run at the ninth.
func TestRunOutputTotalCap(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "celtotal")
	// 7.8 MB from 30,000 joins of 260 characters: cheap enough to stay far
	// inside the 2 s evaluation limit on a busy machine.
	leaf := `lists.range(30000).map(x, '` + strings.Repeat("abcdefghijklmnopqrstuvwxyz", 10) + `').join('')`
	var list []any
	prev := ""
	for i := range 9 {
		st := map[string]any{"id": "s" + strconv.Itoa(i), "type": "transform", "output": leaf}
		if prev != "" {
			st["needs"] = []any{prev}
		}
		prev = "s" + strconv.Itoa(i)
		list = append(list, st)
	}
	list = append(list, map[string]any{"id": "small", "type": "transform", "output": `lists.range(10000).map(x, 'abcdefghij').join('')`})
	wf, _ := deployWorkflow(t, f, "total", map[string]any{"schemaVersion": 1, "steps": list, "output": "'done'"})
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	// Polled without the outputs, which weigh 70 MB.
	const qLight = `query($id: ID!) { node(id: $id) { ... on Run { status error { class message stepID } steps { stepID status } } } }`
	var run map[string]any
	eventually(t, 90*time.Second, func() (bool, string) {
		run, _ = get(f.owner.ok(qLight, map[string]any{"id": id}), "node").(map[string]any)
		return isTerminal(str(run, "status")), fmt.Sprintf("run %s is %s", id, str(run, "status"))
	})
	if run["status"] != "failed" || str(run, "error.class") != "limit" || str(run, "error.stepID") != "s8" ||
		!strings.Contains(str(run, "error.message"), "64 MiB") {
		t.Fatalf("run %s, error %v; want s8 failed with class limit naming 64 MiB", run["status"], run["error"])
	}
	if st := stepOf(run, "small"); st["status"] != "succeeded" {
		t.Errorf("a 100 KB output is fine: %v", st["status"])
	}
}

// formatBomb is a condition that formats ten aliases of a million-element
// list: 780 MB and over a second when nothing bounds it.
const formatBomb = `cel.bind(l, lists.range(1000000), cel.bind(m, [l,l,l,l,l,l,l,l,l,l], '%s'.format([m]).size() > 0))`

// vmHWM is a process's peak resident memory in KiB (Linux).
func vmHWM(t *testing.T, p *process) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid(t)) + "/status")
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// A first step's `if` is a tenant expression: startRun must not evaluate it
// in the API process. The API answers at once with its memory unchanged;
// a worker evaluates the condition, which fails the step with class limit.
func TestIfBombNotEvaluatedByAPI(t *testing.T) {
	t.Parallel()
	st := newProcessStack(t, 1) // the API's peak memory is read from /proc
	f := newFixture(t, "celif")
	wf, _ := deployWorkflow(t, f, "ifbomb", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "guarded", "type": "transform", "if": formatBomb, "output": "'ran'"},
			map[string]any{"id": "skipme", "type": "transform", "if": "input.go == true", "output": "'ran'"},
		},
	})
	c := f.owner.on(st.server)
	before := vmHWM(t, st.server)
	start := time.Now()
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"go": false}}), "startRun.id")
	if took := time.Since(start); took > 10*time.Second { // evaluating the bomb takes the API far longer (and the memory check below)
		t.Errorf("startRun took %s", took)
	}
	if grew := vmHWM(t, st.server) - before; grew > 100<<10 {
		t.Errorf("the API's peak memory grew by %d MiB during startRun", grew>>10)
	}
	run := waitRun(t, c, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "limit" || !strings.Contains(str(run, "error.message"), "evaluate if") {
		t.Fatalf("run %s, error %v; want failed with class limit from the if", run["status"], run["error"])
	}
	if grew := vmHWM(t, st.server) - before; grew > 100<<10 {
		t.Errorf("the API's peak memory grew by %d MiB", grew>>10)
	}
}

// The same condition after an approval: decideApproval does not evaluate
// the dependents' expressions either; a worker does.
func TestApprovalDependentsNotEvaluatedByAPI(t *testing.T) {
	t.Parallel()
	st := newProcessStack(t, 1) // the API's peak memory is read from /proc
	f := newFixture(t, "celapr")
	c := f.owner.on(st.server)
	wf2, _ := deployWorkflow(t, f, "ifbomb-approval", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "ask", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}},
			map[string]any{"id": "guarded", "type": "transform", "needs": []any{"ask"}, "if": formatBomb, "output": "'ran'"},
		},
	})
	id := str(c.ok(mStartRun, map[string]any{"w": wf2, "e": f.envID}), "startRun.id")
	first := id
	waitRun(t, c, id, 30*time.Second, "waiting")
	apps := edges(c.ok(`query($r: ID!) { approvals(where: {runID: $r}) { edges { node { id } } } }`, map[string]any{"r": id}), "approvals")
	if len(apps) != 1 {
		t.Fatalf("approvals: %v", apps)
	}
	before := vmHWM(t, st.server)
	start := time.Now()
	c.ok(`mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`, map[string]any{"id": str(apps[0], "id")})
	if took := time.Since(start); took > 10*time.Second { // evaluating the bomb takes the API far longer (and the memory check below)
		t.Errorf("decideApproval took %s", took)
	}
	if grew := vmHWM(t, st.server) - before; grew > 100<<10 {
		t.Errorf("the API's peak memory grew by %d MiB during decideApproval", grew>>10)
	}
	run := waitRun(t, c, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "limit" || str(run, "error.stepID") != "guarded" {
		t.Fatalf("run %s, error %v; want guarded failed with class limit", run["status"], run["error"])
	}

	// An approval that is its run's last open step completes the run: the
	// run's output is then evaluated by a worker, not by decideApproval.
	wf3, _ := deployWorkflow(t, f, "outbomb-approval", map[string]any{
		"schemaVersion": 1,
		"steps":         []any{map[string]any{"id": "ask", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}}},
		"output":        aliasBomb,
	})
	id = str(c.ok(mStartRun, map[string]any{"w": wf3, "e": f.envID}), "startRun.id")
	waitRun(t, c, id, 30*time.Second, "waiting")
	apps = edges(c.ok(`query($r: ID!) { approvals(where: {runID: $r}) { edges { node { id } } } }`, map[string]any{"r": id}), "approvals")
	if len(apps) != 1 {
		t.Fatalf("approvals: %v", apps)
	}
	before = vmHWM(t, st.server)
	c.ok(`mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`, map[string]any{"id": str(apps[0], "id")})
	if grew := vmHWM(t, st.server) - before; grew > 100<<10 {
		t.Errorf("the API's peak memory grew by %d MiB during decideApproval of the last step", grew>>10)
	}
	run = waitRun(t, c, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "limit" {
		t.Fatalf("run %s, error %v; want failed with class limit at its output", run["status"], run["error"])
	}
	// A worker's decision shows as an attempt of the step (README, Run
	// events): the one that opened the approval, and for the last open
	// approval the one that finished it; an approval with open dependents
	// is completed by decideApproval itself.
	askAttempts := func(runID string) any {
		d := c.ok(`query($id: ID!) { node(id: $id) { ... on Run { steps { stepID attempts } } } }`, map[string]any{"id": runID})
		for _, s := range get(d, "node.steps").([]any) {
			if str(s, "stepID") == "ask" {
				return get(s, "attempts")
			}
		}
		return nil
	}
	if n := askAttempts(id); n != float64(2) {
		t.Errorf("the last open approval has %v attempts, want 2 (opened and finished by a worker)", n)
	}
	if n := askAttempts(first); n != float64(1) {
		t.Errorf("an approval with open dependents has %v attempts, want 1 (opened by a worker, completed by decideApproval)", n)
	}
}

// Conditions evaluated by workers keep their meaning: a false `if` skips
// its step (step.skipped, no attempt run), a true one runs it, and a run
// whose every step is skipped still succeeds. An approval whose `if` is
// false is skipped without asking anyone; one whose `if` is true opens, and
// after it is approved through the API its dependents run.
func TestConditionsDecidedByWorkers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "celcond")
	wf, _ := deployWorkflow(t, f, "conds", map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"go": map[string]any{"type": "boolean"}}},
		"steps": []any{
			map[string]any{"id": "a", "type": "transform", "if": "input.go", "output": "'a'"},
			map[string]any{"id": "ask", "type": "approval", "if": "input.go", "message": "approve {{ input.go }}?", "approvers": map[string]any{"roles": []any{"operator"}}},
			map[string]any{"id": "b", "type": "transform", "needs": []any{"a", "ask"}, "if": "has(steps.a)", "output": "steps.a.output + '!'"},
		},
		"output": "has(steps.b) ? steps.b.output : 'none'",
	})
	// Every step skipped: the run still ends, succeeded.
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"go": false}}), "startRun.id")
	run := waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "succeeded" || run["output"] != "none" {
		t.Fatalf("all skipped: %v", run)
	}
	for _, s := range []string{"a", "ask", "b"} {
		if st := stepOf(run, s); st["status"] != "skipped" {
			t.Errorf("step %s: %v", s, st)
		}
	}
	types := eventTypes(run)
	if types[0] != "run.queued" || types[len(types)-1] != "run.succeeded" || strings.Count(strings.Join(types, " "), "step.skipped") != 3 ||
		strings.Contains(strings.Join(types, " "), "step.started") || strings.Contains(strings.Join(types, " "), "approval.requested") {
		t.Errorf("events: %v", types)
	}

	// Conditions true: the approval opens with its message rendered, and
	// its approval through the API lets b run.
	id = str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"go": true}}), "startRun.id")
	waitRun(t, f.owner, id, 30*time.Second, "waiting")
	var apps []map[string]any
	eventually(t, 30*time.Second, func() (bool, string) {
		apps = edges(f.owner.ok(`query($r: ID!) { approvals(where: {runID: $r}) { edges { node { id message status } } } }`, map[string]any{"r": id}), "approvals")
		return len(apps) > 0, "no approval for run " + id
	})
	if len(apps) != 1 || str(apps[0], "message") != "approve true?" {
		t.Fatalf("approvals: %v", apps)
	}
	f.owner.ok(`mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`, map[string]any{"id": str(apps[0], "id")})
	run = waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "succeeded" || run["output"] != "a!" {
		t.Fatalf("run: %v", run)
	}
	if st := stepOf(run, "ask"); st["status"] != "succeeded" || get(st, "output.approved") != true {
		t.Errorf("approval step: %v", st)
	}
	// In order: the approval is decided, then its step succeeds, then b runs.
	var order []string
	list, _ := run["events"].([]any)
	for _, e := range list {
		typ, step := str(e, "type"), str(e, "stepID")
		if typ == "approval.decided" || (typ == "step.succeeded" && (step == "ask" || step == "b")) {
			order = append(order, typ+":"+step)
		}
	}
	if strings.Join(order, " ") != "approval.decided:ask step.succeeded:ask step.succeeded:b" {
		t.Errorf("events: %v", order)
	}
}

// A step that kills its worker each time it runs (a poison pill) is taken
// over after each crash, and fails with class `crashed` at its crash limit
// instead of taking down worker after worker forever, even when Redis is
// wiped in between.
func TestPoisonStepFailsAfterCrashLimit(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1, "SLUICE_STEP_STALE_AFTER=2s", "SLUICE_STEP_CRASH_LIMIT=3") // its workers are SIGKILLed
	defer func() { dumpLogs(t, "poison worker", st.workers) }()

	// The step calls a server that never answers; each call it receives is
	// the moment to kill the worker running it.
	calls := make(chan struct{}, 16)
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer once.Do(func() { close(release) })

	f := st.fixture(t, "poison")
	wf, _ := deployWorkflow(t, f, "poison", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "hang", "type": "http", "timeout": "5m", "retry": map[string]any{"maxAttempts": 1},
				"request": map[string]any{"method": "GET", "url": srv.URL + "/hang"}},
		},
	})
	c := f.owner.on(st.server)
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")

	kills := 0
	deadline := time.After(90 * time.Second)
	for kills < 3 {
		select {
		case <-calls:
		case <-deadline:
			run := waitRun(t, c, id, time.Second, "queued", "running", "succeeded", "failed", "cancelled", "waiting")
			t.Fatalf("after %d kills the step was not run again: %v", kills, run)
		}
		victim := st.workers[0]
		_ = victim.cmd.Process.Kill()
		<-victim.done
		kills++
		if kills == 2 {
			// The count lives in Postgres: wiping Redis does not reset it.
			rdb := st.redis()
			if err := rdb.FlushDB(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
			rdb.Close()
		}
		w, err := st.startWorker()
		if err != nil {
			t.Fatal(err)
		}
		st.workers[0] = w
	}
	run := waitRun(t, c, id, 60*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || str(run, "error.class") != "crashed" {
		t.Fatalf("run %s, error %v; want failed with class crashed", run["status"], run["error"])
	}
	step := stepOf(run, "hang")
	if step["status"] != "failed" || str(step, "error.class") != "crashed" || !strings.Contains(str(step, "error.message"), "3 times") {
		t.Errorf("step: %v", step)
	}
	// Three runs of the step, no fourth: the step failed instead.
	select {
	case <-calls:
		t.Errorf("the step ran again after its crash limit")
	default:
	}
	if n := len(eventsOfType(run, "step.reclaimed")); n != 2 {
		t.Errorf("%d takeovers recorded, want 2 (the third silence fails the step)", n)
	}
}

func eventsOfType(run map[string]any, typ string) []map[string]any {
	var out []map[string]any
	list, _ := run["events"].([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

// A run that failed at its output (every step succeeded) cannot be resumed:
// the output would fail the same way, and the API evaluates no expression.
func TestResumeRefusesRunFailedAtOutput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "celout")
	wf, _ := deployWorkflow(t, f, "outfail", map[string]any{
		"schemaVersion": 1,
		"steps":         []any{map[string]any{"id": "a", "type": "transform", "output": map[string]any{"x": "1"}}},
		"output":        "steps.a.output.missing",
	})
	id := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	run := waitRun(t, f.owner, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "failed" || !strings.Contains(str(run, "error.message"), "evaluate output") {
		t.Fatalf("run: %v", run["error"])
	}
	r := f.owner.fail("CONFLICT", `mutation($id: ID!) { resumeRun(id: $id) { id status } }`, map[string]any{"id": id})
	if !strings.Contains(r.Errors[0].Message, "nothing to resume") {
		t.Errorf("message: %s", r.Errors[0].Message)
	}
	if after := waitRun(t, f.owner, id, time.Second, "failed"); len(eventsOfType(after, "run.resumed")) != 0 {
		t.Errorf("the run was resumed: %v", eventTypes(after))
	}
}

// A transform delivered long past due (as the queue redelivers the task of
// a worker that died evaluating it) is claimed in a transaction of its own,
// with heartbeats, so that a crash can be counted: it still runs once and
// its run succeeds.
func TestLateTransformStillRuns(t *testing.T) {
	t.Parallel()
	st := newIsolatedStack(t, 0)
	f := st.fixture(t, "late")
	wf, _ := deployWorkflow(t, f, "late", simpleDefinition())
	c := f.owner.on(st.server)
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"name": "late"}}), "startRun.id")
	// With no worker, the first step waits; its readiness is moved 21s
	// into the past (the clock a worker compares it with) so the delivery
	// is past the 20s threshold of a late one without waiting 21s.
	res, err := st.ownerDB(t).Exec(`UPDATE step_runs SET ready_at = ready_at - interval '21 seconds' WHERE run_id = $1 AND status = 'queued'`, id)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%d queued steps back-dated, want 1", n)
	}
	w, err := startWorker(st.env)
	if err != nil {
		t.Fatal(err)
	}
	st.workers = append(st.workers, w)
	run := waitRun(t, c, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "succeeded" || run["output"] != "HELLO LATE" {
		t.Fatalf("run: %v %v", run["status"], run["error"])
	}
	for _, s := range []string{"greet", "shout"} {
		if st := stepOf(run, s); st["status"] != "succeeded" || st["attempts"] != float64(1) {
			t.Errorf("step %s: %v", s, st)
		}
	}
	if !strings.Contains(w.Logs(), "late transform claimed in a transaction of its own") {
		t.Errorf("the late transform took the usual path; worker log:\n%s", tail(w.Logs(), 2000))
	}
}
