package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/tasks"
)

// sideEffectSteps are the steps of crashDefinition that POST to the sink.
var sideEffectSteps = []string{"a", "b", "c"}

// crashDefinition is five sequential steps, three of them side effects that
// POST to sink with the run id in the body.
func crashDefinition(sink string) map[string]any {
	post := func(id, need string) map[string]any {
		return map[string]any{
			"id": id, "type": "http", "needs": []any{need}, "sideEffect": true, "timeout": "10s",
			"request": map[string]any{"method": "POST", "url": sink + "/" + id,
				"body": map[string]any{"run": "{{ run.id }}", "step": id, "n": "{{ input.n }}"}},
		}
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "required": []any{"n"}, "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{
			map[string]any{"id": "prep", "type": "transform", "output": map[string]any{"run": "run.id", "n": "input.n"}},
			post("a", "prep"),
			map[string]any{"id": "mid", "type": "transform", "needs": []any{"a"}, "output": map[string]any{"aStatus": "steps.a.output.status", "n": "steps.prep.output.n"}},
			post("b", "mid"),
			post("c", "b"),
		},
		"output": "steps.c.output.body",
	}
}

// newSlowSink is a scriptServer that records each request on arrival and
// answers 0-100ms later, so that a worker killed mid-call has often already
// delivered its side effect (the case that makes duplicates).
func newSlowSink(t *testing.T) *scriptServer {
	s := &scriptServer{scripts: map[string][]reply{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serve(w, r) // records, then writes into the unflushed response buffer
		// The receiver's latency: part of the load, not a wait.
		time.Sleep(rand.N(100 * time.Millisecond))
	}))
	t.Cleanup(s.Close)
	return s
}

// sinkBody is what a side-effect step of crashDefinition sends.
type sinkBody struct {
	Run  string `json:"run"`
	Step string `json:"step"`
}

// redelivery is a side effect the sink received more than once.
type redelivery struct {
	run, step    string
	first, again time.Time
}

// checkSink asserts that every (run, step) idempotency key reached the sink
// and that every delivery carried the key of the run and step in its body;
// it returns how many deliveries repeated an earlier one's key.
func checkSink(t *testing.T, sink *scriptServer, runIDs []string, stepIDs []string) (dups int, detail []redelivery) {
	t.Helper()
	seen := map[string]int{}
	first := map[string]time.Time{}
	for _, r := range sink.calls("/") {
		var b sinkBody
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Errorf("sink got a body that is not JSON: %s", r.Body)
			continue
		}
		if want := idempotency.Key(b.Run, b.Step); r.IdempotencyKey != want {
			t.Errorf("delivery of run %s step %s carried Idempotency-Key %q, want %q", b.Run, b.Step, r.IdempotencyKey, want)
		}
		if r.Path != "/"+b.Step {
			t.Errorf("step %s posted to %s", b.Step, r.Path)
		}
		seen[r.IdempotencyKey]++
		if at, ok := first[r.IdempotencyKey]; ok {
			detail = append(detail, redelivery{run: b.Run, step: b.Step, first: at, again: r.At})
		} else {
			first[r.IdempotencyKey] = r.At
		}
	}
	missing := 0
	for _, id := range runIDs {
		for _, s := range stepIDs {
			if seen[idempotency.Key(id, s)] == 0 {
				missing++
				if missing <= 10 {
					t.Errorf("sink never saw run %s step %s", id, s)
				}
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d (run, step) deliveries missing", missing)
	}
	for _, n := range seen {
		if n > 1 {
			dups += n - 1
		}
	}
	return dups, detail
}

// checkRecorded asserts, through GraphQL, that every run succeeded with
// exactly one StepRun per step, one succeeded attempt and one output per
// step, and one step.succeeded event per step (outputs never recomputed).
func checkRecorded(t *testing.T, g *client, runIDs []string, allSteps []string, sideEffects []string) {
	t.Helper()
	details, err := g.runDetails(runIDs)
	if err != nil {
		t.Fatal(err)
	}
	bad := 0
	report := func(format string, args ...any) {
		bad++
		if bad <= 20 {
			t.Errorf(format, args...)
		}
	}
	isSide := map[string]bool{}
	for _, s := range sideEffects {
		isSide[s] = true
	}
	for _, id := range runIDs {
		run := details[id]
		if run == nil {
			report("run %s not found", id)
			continue
		}
		if run["status"] != "succeeded" {
			report("run %s is %v", id, run["status"])
		}
		if n := len(eventsOf(run, "run.succeeded", "")); n != 1 {
			report("run %s has %d run.succeeded events", id, n)
		}
		for _, s := range allSteps {
			list := stepsWithID(run, s)
			if len(list) != 1 {
				report("run %s has %d StepRuns for step %s", id, len(list), s)
				continue
			}
			sr := list[0]
			if sr["status"] != "succeeded" || sr["output"] == nil {
				report("run %s step %s: status %v output %v", id, s, sr["status"], sr["output"])
			}
			succeeded := 0
			attempts, _ := sr["attemptList"].([]any)
			for _, a := range attempts {
				if str(a, "status") == "succeeded" {
					succeeded++
				}
			}
			if succeeded != 1 {
				report("run %s step %s has %d succeeded attempts: %v", id, s, succeeded, attempts)
			}
			if n := len(eventsOf(run, "step.succeeded", s)); n != 1 {
				report("run %s step %s has %d step.succeeded events", id, s, n)
			}
			if isSide[s] {
				// The recorded output is the sink's answer to this step.
				if st, _ := get(sr, "output.status").(float64); st != 200 || str(sr, "output.body.path") != "/"+s {
					report("run %s step %s recorded output %v", id, s, sr["output"])
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d recording problems", bad)
	}
}

// checkStepRowsDB cross-checks in Postgres that no (run, step) has more than
// one step_runs row or more than one succeeded attempt.
func checkStepRowsDB(t *testing.T, runIDs []string) {
	t.Helper()
	db := ownerDB(t)
	var dupRows, dupSucceeded int
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM step_runs WHERE run_id = ANY($1) GROUP BY run_id, step_id HAVING count(*) > 1) x`, runIDs).Scan(&dupRows); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM (SELECT 1 FROM step_attempts WHERE run_id = ANY($1) AND status = 'succeeded' GROUP BY run_id, step_id HAVING count(*) > 1) x`, runIDs).Scan(&dupSucceeded); err != nil {
		t.Fatal(err)
	}
	if dupRows != 0 || dupSucceeded != 0 {
		t.Errorf("database: %d (run, step) with several step_runs rows, %d with several succeeded attempts", dupRows, dupSucceeded)
	}
}

// dumpLogs prints the tail of every worker log of a failed test.
func dumpLogs(t *testing.T, name string, procs []*process) {
	if !t.Failed() {
		return
	}
	for i, p := range procs {
		t.Logf("--- %s %d log (tail)\n%s", name, i, tail(p.Logs(), 3000))
	}
}

var logIDs = regexp.MustCompile(`\b(att|run|wf|wfv|env|ten)_[0-9a-z]+`)

// logSummary counts the warnings and errors in the logs of procs and
// returns the distinct messages with their counts.
func logSummary(procs []*process) map[string]int {
	out := map[string]int{}
	for _, p := range procs {
		for _, line := range strings.Split(p.Logs(), "\n") {
			var e struct {
				Level, Msg, Err string
			}
			if json.Unmarshal([]byte(line), &e) != nil || (e.Level != "WARN" && e.Level != "ERROR") {
				continue
			}
			msg := e.Level + " " + e.Msg
			if e.Err != "" {
				msg += ": " + e.Err
			}
			msg = logIDs.ReplaceAllString(msg, "${1}_*")
			if len(msg) > 160 {
				msg = msg[:160]
			}
			out[msg]++
		}
	}
	return out
}

// TestCrashSafety SIGKILLs the workers of a stack over and over while 200
// runs with side effects execute: every run must still succeed, every side
// effect must be recorded exactly once, and the receiving system must see
// every idempotency key (ideally exactly once).
//
// Its stack has a database of its own (newIsolatedProcessStack): the
// suite's workers never see its runs, so what recovers them is the
// stack's own workers, and it runs in parallel with the rest of the suite.
func TestCrashSafety(t *testing.T) {
	const nRuns = 200
	began := time.Now()
	t.Parallel()
	st := newIsolatedProcessStack(t, 2) // its workers are SIGKILLed
	f := st.fixture(t, "crash")
	sink := newSlowSink(t)
	wf, _ := deployWorkflow(t, f, "crash", crashDefinition(sink.URL))
	g := f.owner.on(st.server)

	// The killer: every 0.5-2s, SIGKILL one worker at random, wait for it to
	// die and start a replacement. It stops once every run has started and
	// either every run is terminal or it has been killing for 25s.
	var (
		mu        sync.Mutex // guards st.workers, dead and killedAt
		dead      []*process
		killedAt  []time.Time
		kills     atomic.Int64
		allIn     atomic.Bool
		finished  atomic.Int64 // terminal runs, as last polled
		killerErr error
	)
	stopKiller := make(chan struct{})
	killerDone := make(chan struct{})
	killStart := time.Now()
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(500*time.Millisecond + rand.N(1500*time.Millisecond)):
			}
			if allIn.Load() && (finished.Load() == nRuns || time.Since(killStart) > 25*time.Second) {
				return
			}
			i := rand.IntN(2)
			mu.Lock()
			victim := st.workers[i]
			mu.Unlock()
			_ = victim.cmd.Process.Kill()
			<-victim.done
			kills.Add(1)
			mu.Lock()
			killedAt = append(killedAt, time.Now())
			mu.Unlock()
			var w *process
			var err error
			for try := 0; try < 10; try++ {
				if w, err = st.startWorker(); err == nil {
					break
				}
				time.Sleep(500 * time.Millisecond) // retry pacing for a restart on a busy machine
			}
			mu.Lock()
			dead = append(dead, victim)
			if err != nil {
				killerErr = err
				mu.Unlock()
				return
			}
			st.workers[i] = w
			mu.Unlock()
		}
	}()
	// A poller keeps `finished` current for the killer.
	pollCtx, stopPoll := context.WithCancel(context.Background())
	var idsMu sync.Mutex
	var startedIDs []string
	go func() {
		for pollCtx.Err() == nil {
			idsMu.Lock()
			ids := append([]string(nil), startedIDs...)
			idsMu.Unlock()
			if len(ids) > 0 {
				if m, err := g.statuses(ids); err == nil {
					finished.Store(int64(countTerminal(m)))
				}
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()

	// Starts are paced (~13/s) so that the load lasts about 15s and the
	// kills land while steps are executing.
	ids, err := g.startRuns(wf, f.envID, nRuns, 20, 75*time.Millisecond, func(i int) map[string]any { return map[string]any{"n": i} }, nil)
	startedIn := time.Since(killStart)
	idsMu.Lock()
	startedIDs = ids
	idsMu.Unlock()
	allIn.Store(true)
	if err != nil {
		close(stopKiller)
		<-killerDone
		stopPoll()
		t.Fatal(err)
	}
	<-killerDone
	stopPoll()
	killedFor := time.Since(killStart)
	mu.Lock()
	if killerErr != nil {
		mu.Unlock()
		t.Fatalf("restart worker: %v", killerErr)
	}
	procs := append(append([]*process(nil), dead...), st.workers...)
	mu.Unlock()
	defer dumpLogs(t, "crash worker", procs)

	// Crashed deliveries come back through the reconciler or after asynq's
	// lease (30s, recovered 30s after expiry).
	statuses, err := g.waitTerminal(ids, 3*time.Minute)
	if err != nil {
		t.Fatalf("poll runs: %v", err)
	}
	settled := time.Since(killStart)
	byStatus := map[string]int{}
	var stuck []string
	for _, id := range ids {
		s := statuses[id]
		byStatus[s]++
		if !isTerminal(s) {
			stuck = append(stuck, id+"="+s)
		}
	}
	if len(stuck) > 0 {
		sort.Strings(stuck)
		t.Errorf("%d runs not terminal after 3m: %s", len(stuck), strings.Join(stuck[:min(10, len(stuck))], ", "))
	}
	if byStatus["succeeded"] != nRuns {
		t.Errorf("runs by status: %v; want all %d succeeded", byStatus, nRuns)
	}
	if kills.Load() == 0 {
		t.Error("the killer never killed a worker")
	}

	checkRecorded(t, g, ids, []string{"prep", "a", "mid", "b", "c"}, sideEffectSteps)
	checkStepRowsDB(t, ids)
	dups, again := checkSink(t, sink, ids, sideEffectSteps)

	msg := fmt.Sprintf("crash safety: %d runs started in %s; %d worker kills over %s; all terminal %s after the first start (%s total with setup); %d sink deliveries for %d (run, step) keys, %d duplicate deliveries; statuses %v",
		nRuns, startedIn.Round(time.Millisecond), kills.Load(), killedFor.Round(time.Millisecond), settled.Round(time.Millisecond),
		time.Since(began).Round(time.Millisecond), len(sink.calls("/")), nRuns*len(sideEffectSteps), dups, byStatus)
	t.Log(msg)
	fmt.Println(msg)
	for m, n := range logSummary(procs) {
		t.Logf("worker log: %dx %s", n, m)
	}
	// Each duplicate should follow a kill of the worker that made the first
	// call; say which ones do not (those would be concurrent executions).
	for _, d := range again {
		killed := 0
		for _, k := range killedAt {
			if k.After(d.first) && k.Before(d.again) {
				killed++
			}
		}
		line := fmt.Sprintf("  duplicate: run %s step %s first at +%s, again %s later; kills in between: %d",
			d.run, d.step, d.first.Sub(killStart).Round(time.Millisecond), d.again.Sub(d.first).Round(time.Millisecond), killed)
		t.Log(line)
		fmt.Println(line)
	}
}

// delayDefinition waits 2s between a transform and a side effect.
func delayDefinition(sink string) map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{
			map[string]any{"id": "prep", "type": "transform", "output": map[string]any{"n": "input.n"}},
			map[string]any{"id": "wait", "type": "delay", "needs": []any{"prep"}, "duration": "2s"},
			map[string]any{"id": "post", "type": "http", "needs": []any{"wait"}, "sideEffect": true, "timeout": "10s",
				"request": map[string]any{"method": "POST", "url": sink + "/post",
					"body": map[string]any{"run": "{{ run.id }}", "step": "post"}}},
			map[string]any{"id": "done", "type": "transform", "needs": []any{"post"}, "output": "steps.post.output.status"},
		},
		"output": "steps.done.output",
	}
}

// TestRedisWipedMidway wipes the stack's Redis while 100 runs are in flight
// (many of them parked on a 2s delay whose wake-up lives only in Redis):
// every run must still finish, rebuilt from Postgres by the stack's
// reconciler (its database is its own: no other worker sees the runs).
func TestRedisWipedMidway(t *testing.T) {
	const nRuns = 100
	t.Parallel()
	st := newIsolatedStack(t, 2)
	defer func() { dumpLogs(t, "wipe worker", st.workers) }()
	f := st.fixture(t, "wipe")
	sink := newScriptServer(t)
	wf, _ := deployWorkflow(t, f, "wipe", delayDefinition(sink.URL))
	g := f.owner.on(st.server)
	rdb := st.redis()
	defer rdb.Close()

	var wipeOnce sync.Once
	var keysBefore int64
	var wipeErr error
	began := time.Now()
	ids, err := g.startRuns(wf, f.envID, nRuns, 20, 0, func(i int) map[string]any { return map[string]any{"n": i} }, func(done int) {
		if done < nRuns/2 {
			return
		}
		wipeOnce.Do(func() {
			ctx := context.Background()
			keysBefore, wipeErr = rdb.DBSize(ctx).Result()
			if wipeErr == nil {
				// Sluice keeps everything in its own Redis database, so
				// FLUSHDB here is what FLUSHALL is to a dedicated Redis.
				wipeErr = rdb.FlushDB(ctx).Err()
			}
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if wipeErr != nil {
		t.Fatalf("wipe redis: %v", wipeErr)
	}
	if keysBefore == 0 {
		t.Fatal("Redis held no keys when wiped: the wipe proved nothing")
	}
	statuses, err := g.waitTerminal(ids, 2*time.Minute)
	if err != nil {
		t.Fatalf("poll runs: %v", err)
	}
	byStatus := map[string]int{}
	for _, id := range ids {
		byStatus[statuses[id]]++
	}
	if byStatus["succeeded"] != nRuns {
		t.Fatalf("runs by status: %v; want all %d succeeded", byStatus, nRuns)
	}
	checkRecorded(t, g, ids, []string{"prep", "wait", "post", "done"}, []string{"post"})
	dups, _ := checkSink(t, sink, ids, []string{"post"})
	reconciled := 0
	for _, w := range st.workers {
		reconciled += strings.Count(w.Logs(), `"msg":"reconciled"`)
	}
	for m, n := range logSummary(st.workers) {
		t.Logf("worker log: %dx %s", n, m)
	}
	if reconciled == 0 {
		// The wipe dropped the scheduled wake-ups of the runs parked on
		// their delay; only the stack's reconciler can have re-sent them.
		t.Error("the stack's workers never logged re-sending due work after the wipe")
	}
	msg := fmt.Sprintf("redis wipe: %d keys wiped after %d starts; all %d runs succeeded in %s; %d duplicate deliveries; stack reconciler re-sent work %d times",
		keysBefore, nRuns/2, nRuns, time.Since(began).Round(time.Millisecond), dups, reconciled)
	t.Log(msg)
	fmt.Println(msg)
}

// TestArchivedWakeUpDoesNotStrandRun archives a step's queued wake-up, the
// state asynq leaves a task in once its retries are exhausted (for example
// through a Postgres outage longer than the retry schedule). The task id is
// still taken, so a plain re-enqueue by the reconciler is rejected; the run
// must still finish.
func TestArchivedWakeUpDoesNotStrandRun(t *testing.T) {
	t.Parallel()
	st := newIsolatedStack(t, 1)
	defer func() { dumpLogs(t, "archive worker", st.workers) }()
	f := st.fixture(t, "archived")
	wf, _ := deployWorkflow(t, f, "archived", map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "wait", "type": "delay", "duration": "4s"},
			map[string]any{"id": "done", "type": "transform", "needs": []any{"wait"}, "output": "'done'"},
		},
		"output": "steps.done.output",
	})
	c := f.owner.on(st.server)
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id")
	run := waitRun(t, c, id, 10*time.Second, "waiting")
	var attemptID string
	d := c.ok(`query($id: ID!) { node(id: $id) { ... on Run { steps { stepID attemptList { id status } } } } }`, map[string]any{"id": id})
	if list, _ := get(d, "node.steps").([]any); len(list) > 0 {
		if atts, _ := get(list[0], "attemptList").([]any); len(atts) == 1 {
			attemptID = str(atts[0], "id")
		}
	}
	if attemptID == "" {
		t.Fatalf("no attempt for the delay step: %v (run %v)", d, run["status"])
	}
	rdb := st.redis()
	defer rdb.Close()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if err := insp.ArchiveTask("steps", tasks.KindStep+":"+attemptID); err != nil {
		t.Fatalf("archive the delay's wake-up: %v", err)
	}
	run = waitRun(t, c, id, 30*time.Second, "succeeded", "failed", "cancelled")
	if run["status"] != "succeeded" || run["output"] != "done" {
		t.Fatalf("run: %v", run)
	}
}
