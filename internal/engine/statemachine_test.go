package engine

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

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

// script is a loopback HTTP server answering each request with the next
// status of its script (the last one repeats) and counting requests.
type script struct {
	*httptest.Server
	mu       sync.Mutex
	statuses []int
	hits     int
}

func newScript(t *testing.T, statuses ...int) *script {
	s := &script{statuses: statuses}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		i := min(s.hits, len(s.statuses)-1)
		code := s.statuses[i]
		s.hits++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"hit":%d}`, i+1)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *script) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

func (s *script) set(statuses ...int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses, s.hits = statuses, 0
}

func httpStep(id, url string) map[string]any {
	return map[string]any{"id": id, "type": "http", "request": map[string]any{"method": "GET", "url": url}}
}

// TestRetryWithBackoff: a 503 schedules the next attempt after a backoff
// computed from the engine's clock; a delivery before it is due does
// nothing; once the clock passes it, the reconciler re-sends it and it runs.
func TestRetryWithBackoff(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newScript(t, 503, 200)
	st := httpStep("call", srv.URL+"/flaky")
	st["retry"] = map[string]any{"maxAttempts": 3, "initialInterval": "10s", "maxInterval": "1m", "backoffCoefficient": 2}
	id := x.start(x.deploy(def("steps.call.output.body.hit", st)), nil)
	t0 := x.clock.Now()
	x.drain()
	if srv.count() != 1 {
		t.Fatalf("server saw %d requests, want 1", srv.count())
	}
	sr := x.step(id, "call")
	at := x.attempts(id, "call")
	if sr.Status != steprun.StatusQueued || sr.Attempts != 2 || len(at) != 2 || sr.ReadyAt == nil {
		t.Fatalf("after the 503: step %s, attempts %d/%d, ready_at %v", sr.Status, sr.Attempts, len(at), sr.ReadyAt)
	}
	if at[0].Status != stepattempt.StatusFailed || at[0].ErrorClass == nil || *at[0].ErrorClass != "transient" ||
		at[1].Status != stepattempt.StatusQueued || *sr.CurrentAttemptID != at[1].ID {
		t.Fatalf("attempts: %v / %v", at[0], at[1])
	}
	retrying := x.event(id, "step.retrying", "call")
	delay := time.Duration(retrying.Data["delayMs"].(float64)) * time.Millisecond
	// Equal jitter of the first interval: between 5s and 10s.
	if delay < 5*time.Second || delay > 10*time.Second {
		t.Fatalf("backoff %v, want 5s..10s", delay)
	}
	if d := sr.ReadyAt.Sub(t0.Add(delay)); d < 0 || d >= time.Millisecond {
		t.Fatalf("ready_at %v, want the clock %v + %v", sr.ReadyAt, t0, delay)
	}
	if !at[1].ScheduledAt.Equal(*sr.ReadyAt) {
		t.Errorf("attempt 2 scheduled at %v, step ready at %v", at[1].ScheduledAt, sr.ReadyAt)
	}
	x.wantLog(id, "run.queued", "step.started call#1", "run.started", "step.retrying call#1")

	// The wake-up comes early (or a duplicate): nothing happens.
	next := Task{Kind: TaskStep, TenantID: x.tenantID, RunID: id, StepID: "call", ID: at[1].ID}
	x.clock.Advance(delay - 3*time.Second)
	if err := x.execute(next); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 1 || x.step(id, "call").Status != steprun.StatusQueued || len(x.events(id)) != 4 {
		t.Fatalf("an early delivery ran the attempt (requests %d)", srv.count())
	}
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 0 {
		t.Fatalf("due before ready_at: %v %v", due, err)
	}

	// Past due (and the reconciler's grace): re-sent, and it runs.
	x.clock.Advance(3*time.Second + 2*time.Second + time.Millisecond) // delayMs is rounded down
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 || due[0].ID != at[1].ID || due[0].Kind != TaskStep {
		t.Fatalf("due after ready_at: %+v %v", due, err)
	}
	if err := x.execute(due[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded || string(r.Output) != "2" || srv.count() != 2 {
		t.Fatalf("run %s output %s requests %d", r.Status, r.Output, srv.count())
	}
	at = x.attempts(id, "call")
	if at[1].Status != stepattempt.StatusSucceeded || at[1].StartedAt == nil || !at[1].StartedAt.Equal(x.clock.Now()) {
		t.Errorf("attempt 2: %v", at[1])
	}
	x.wantLog(id, "run.queued", "step.started call#1", "run.started", "step.retrying call#1",
		"step.started call#2", "step.succeeded call#2", "run.succeeded")
}
