package runs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/tasks"
)

// TestClaimFinishSettle: a run's first step is queued with a task; a
// delivery claims it, finishes it, runs its dependent and settles the run
// with its output.
func TestClaimFinishSettle(t *testing.T) {
	t.Parallel()
	x := newH(t)
	wf := x.deploy(def("steps.b.output",
		map[string]any{"id": "a", "type": "transform", "output": "input.n + 1"},
		map[string]any{"id": "b", "type": "transform", "needs": []any{"a"}, "output": "steps.a.output * 10"},
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
	sent := x.rec.take()
	if len(sent) != 1 || sent[0].Kind != tasks.KindStep || sent[0].StepID != "a" || sent[0].ID != *a.CurrentAttemptID || sent[0].RunID != id {
		t.Fatalf("dispatched %+v", sent)
	}
	x.clock.Advance(time.Second)
	if err := x.execute(sent[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded || r.FinishedAt == nil || !r.FinishedAt.Equal(x.clock.Now()) {
		t.Fatalf("run: %+v", r)
	}
	if string(r.Output) != "50" {
		t.Errorf("output %s", r.Output)
	}
	for _, s := range []string{"a", "b"} {
		sr := x.step(id, s)
		at := x.attempts(id, s)
		if sr.Status != steprun.StatusSucceeded || len(at) != 1 || at[0].Status != stepattempt.StatusSucceeded {
			t.Fatalf("step %s: %s, attempts %d", s, sr.Status, len(at))
		}
		// Claimed and finished at the engine's clock.
		now := x.clock.Now()
		if !sr.StartedAt.Equal(now) || !sr.FinishedAt.Equal(now) || !at[0].StartedAt.Equal(now) || !at[0].FinishedAt.Equal(now) {
			t.Errorf("step %s times: started %v finished %v, attempt %v %v, clock %v", s, sr.StartedAt, sr.FinishedAt, at[0].StartedAt, at[0].FinishedAt, now)
		}
	}
	x.wantLog(id, "run.queued", "step.started a#1", "run.started", "step.succeeded a#1", "step.started b#1", "step.succeeded b#1", "run.succeeded")
	// Subscribers heard of each committed change, the last one the end.
	x.rec.mu.Lock()
	notices := x.rec.notices
	x.rec.mu.Unlock()
	if len(notices) == 0 || notices[len(notices)-1].Status != "succeeded" || notices[len(notices)-1].RunID != id {
		t.Errorf("notices %+v", notices)
	}
	heard := 0
	for _, n := range notices {
		heard += len(n.Events)
	}
	if heard != 7 {
		t.Errorf("notices carried %d events, the log has 7", heard)
	}
	// A duplicate delivery of a finished attempt changes nothing.
	before := len(x.events(id))
	if err := x.execute(sent[0]); err != nil {
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
	next := tasks.Task{Kind: tasks.KindStep, TenantID: x.tenantID, RunID: id, StepID: "call", ID: at[1].ID}
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
	if err != nil || len(due) != 1 || due[0].ID != at[1].ID || due[0].Kind != tasks.KindStep {
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

// TestTakeoverOfSilentAttempt: a worker claims an http step and dies in the
// call; while its heartbeat is fresh nobody else runs the step; once the
// clock passes the stale period the reconciler re-sends it under a task id
// of its own and another worker takes it over (step.reclaimed) and
// finishes it under the same attempt.
func TestTakeoverOfSilentAttempt(t *testing.T) {
	t.Parallel()
	x := newH(t)
	received := make(chan struct{}, 1)
	var hits int32
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		first := hits == 1
		mu.Unlock()
		if first {
			received <- struct{}{}
			<-r.Context().Done() // the first worker dies mid-call
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(srv.Close)
	id := x.start(x.deploy(def("steps.call.output.body.ok", httpStep("call", srv.URL))), nil)
	sent := stepTasks(x.rec.take())
	if len(sent) != 1 {
		t.Fatalf("sent %+v", sent)
	}
	claimedAt := x.clock.Now()
	ctx, die := context.WithCancel(context.Background())
	t.Cleanup(die)
	done := make(chan error, 1)
	go func() {
		done <- x.e.ExecuteChain(ctx, x.tenantID, AttemptRef{RunID: id, StepID: "call", ID: sent[0].ID})
	}()
	select {
	case <-received:
	case <-time.After(20 * time.Second):
		t.Fatal("the first worker never called")
	}
	sr := x.step(id, "call")
	// updated_at is the row's (Ent's wall clock); the stale check compares
	// it with the engine's clock, which started at the wall clock.
	if sr.Status != steprun.StatusRunning || sr.UpdatedAt.Sub(claimedAt).Abs() > 5*time.Second {
		t.Fatalf("claimed step: %s updated %v", sr.Status, sr.UpdatedAt)
	}
	if at := x.attempts(id, "call"); len(at) != 1 || at[0].Status != stepattempt.StatusRunning {
		t.Fatalf("attempts %v", at)
	}
	die()
	if err := <-done; err == nil {
		t.Fatal("the dying worker reported success")
	}
	// The dead worker left the step running.
	if sr := x.step(id, "call"); sr.Status != steprun.StatusRunning {
		t.Fatalf("after the worker died: %s", sr.Status)
	}
	logBefore := []string{"run.queued", "step.started call#1", "run.started"}
	x.wantLog(id, logBefore...)

	// Within the stale period: another delivery leaves it to its holder.
	x.clock.Advance(stale - 10*time.Second)
	if err := x.execute(sent[0]); err != nil {
		t.Fatal(err)
	}
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 0 {
		t.Fatalf("due within the stale period: %+v %v", due, err)
	}
	x.wantLog(id, logBefore...)

	// Past it: taken over.
	x.clock.Advance(20 * time.Second)
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 || due[0].ID != sent[0].ID || due[0].Variant == "" {
		t.Fatalf("due past the stale period: %+v %v", due, err)
	}
	if err := x.execute(due[0]); err != nil {
		t.Fatal(err)
	}
	r := x.run(id)
	if r.Status != run.StatusSucceeded || string(r.Output) != "true" {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	at := x.attempts(id, "call")
	if len(at) != 1 || at[0].Status != stepattempt.StatusSucceeded || x.step(id, "call").Attempts != 1 {
		t.Fatalf("attempts after the takeover: %v", at)
	}
	rec := x.event(id, "step.reclaimed", "call")
	if rec.Data["attemptID"] != sent[0].ID || rec.Data["takeover"] != float64(1) {
		t.Errorf("step.reclaimed data %v", rec.Data)
	}
	x.wantLog(id, append(logBefore, "step.reclaimed call#1", "step.succeeded call#1", "run.succeeded")...)
}

func approvalStep(id, timeout, onTimeout string, needs ...string) map[string]any {
	s := map[string]any{"id": id, "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": timeout}
	if onTimeout != "" {
		s["onTimeout"] = onTimeout
	}
	if len(needs) > 0 {
		s["needs"] = needs
	}
	return s
}

// approvalRun starts a run whose first step asks for approval (1h timeout)
// and whose second is a transform; it returns the run and its request.
func approvalRun(x *h, onTimeout string) (string, *ent.ApprovalRequest, []tasks.Task) {
	x.t.Helper()
	id := x.start(x.deploy(def("steps.after.output",
		approvalStep("gate", "1h", onTimeout),
		map[string]any{"id": "after", "type": "transform", "needs": []any{"gate"}, "output": "'done'"},
	)), nil)
	other := x.drain()
	aprs := x.approvals(id)
	if len(aprs) != 1 {
		x.t.Fatalf("approval requests: %v", aprs)
	}
	return id, aprs[0], other
}

// TestApprovalDecided: an approval step waits with a pending request and
// an expiry task; an operator's approval lets the run go on; a second
// decision is CONFLICT.
func TestApprovalDecided(t *testing.T) {
	t.Parallel()
	x := newH(t)
	t0 := x.clock.Now()
	id, apr, other := approvalRun(x, "")
	if apr.Status != approvalrequest.StatusPending || apr.ExpiresAt == nil || !apr.ExpiresAt.Equal(t0.Add(time.Hour)) || apr.StepID != "gate" {
		t.Fatalf("request %v", apr)
	}
	if len(other) != 1 || other[0].Kind != tasks.KindApprovalTimeout || other[0].ID != apr.ID || !other[0].At.Equal(*apr.ExpiresAt) {
		t.Fatalf("expiry task %+v", other)
	}
	if sr := x.step(id, "gate"); sr.Status != steprun.StatusWaiting {
		t.Fatalf("gate is %s", sr.Status)
	}
	if r := x.run(id); r.Status != run.StatusWaiting {
		t.Fatalf("run is %s", r.Status)
	}
	waiting := []string{"run.queued", "run.started", "approval.requested gate", "run.waiting"}
	x.wantLog(id, waiting...)

	// A viewer may not decide (approvers are operators): nothing written.
	if err := x.as("user_viewer", "viewer").try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, true, "")
		return err
	}); errs.CodeOf(err) != errs.Forbidden {
		t.Fatalf("viewer decision: %v", err)
	}
	x.wantLog(id, waiting...)

	x.clock.Advance(time.Minute)
	op := x.as("user_op", "operator")
	op.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, true, "looks fine")
		return err
	})
	x.drain()
	got := x.approvals(id)[0]
	if got.Status != approvalrequest.StatusApproved || got.DecidedBy == nil || *got.DecidedBy != "user_op" ||
		got.DecidedAt == nil || !got.DecidedAt.Equal(t0.Add(time.Minute)) || got.Comment == nil || *got.Comment != "looks fine" {
		t.Fatalf("decided request %v", got)
	}
	if r := x.run(id); r.Status != run.StatusSucceeded || string(r.Output) != `"done"` {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	if sr := x.step(id, "gate"); sr.Status != steprun.StatusSucceeded {
		t.Fatalf("gate is %s", sr.Status)
	}
	dec := x.event(id, "approval.decided", "gate")
	if dec.Data["decision"] != "approve" || dec.Data["by"] != "user_op" {
		t.Errorf("approval.decided %v", dec.Data)
	}
	x.wantLog(id, append(waiting, "approval.decided gate", "step.succeeded gate", "run.running",
		"step.started after#1", "step.succeeded after#1", "run.succeeded")...)
	if err := op.try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, false, "")
		return err
	}); errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("second decision: %v", err)
	}
	// The expiry task, delivered later, finds it decided.
	x.clock.Advance(2 * time.Hour)
	if err := x.e.ExpireApproval(context.Background(), x.tenantID, apr.ID); err != nil {
		t.Fatal(err)
	}
	if got := x.approvals(id)[0]; got.Status != approvalrequest.StatusApproved {
		t.Fatalf("expiry after the decision: %s", got.Status)
	}
}

// TestApprovalTimeout: before its expiry an expiry task does nothing and
// the reconciler sends none; after it, the request expires and the step
// goes the way of onTimeout.
func TestApprovalTimeout(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		onTimeout string
		run       run.Status
		gate      steprun.Status
	}{
		{"", run.StatusFailed, steprun.StatusFailed}, // reject by default
		{"approve", run.StatusSucceeded, steprun.StatusSucceeded},
	} {
		t.Run("onTimeout="+tc.onTimeout, func(t *testing.T) {
			t.Parallel()
			x := newH(t)
			id, apr, _ := approvalRun(x, tc.onTimeout)
			x.clock.Advance(time.Hour - time.Second)
			if err := x.e.ExpireApproval(context.Background(), x.tenantID, apr.ID); err != nil {
				t.Fatal(err)
			}
			if got := x.approvals(id)[0]; got.Status != approvalrequest.StatusPending {
				t.Fatalf("before expiry: %s", got.Status)
			}
			due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
			if err != nil || len(due) != 0 {
				t.Fatalf("due before expiry: %+v %v", due, err)
			}
			x.clock.Advance(time.Second)
			due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
			if err != nil || len(due) != 1 || due[0].Kind != tasks.KindApprovalTimeout || due[0].ID != apr.ID {
				t.Fatalf("due at expiry: %+v %v", due, err)
			}
			if err := x.e.ExpireApproval(context.Background(), x.tenantID, due[0].ID); err != nil {
				t.Fatal(err)
			}
			x.drain()
			got := x.approvals(id)[0]
			if got.Status != approvalrequest.StatusExpired || got.DecidedBy == nil || *got.DecidedBy != "timeout" || !got.DecidedAt.Equal(x.clock.Now()) {
				t.Fatalf("expired request %v", got)
			}
			if r := x.run(id); r.Status != tc.run {
				t.Fatalf("run %s, want %s", r.Status, tc.run)
			}
			if sr := x.step(id, "gate"); sr.Status != tc.gate {
				t.Fatalf("gate %s, want %s", sr.Status, tc.gate)
			}
			exp := x.event(id, "approval.expired", "gate")
			want := tc.onTimeout
			if want == "" {
				want = "fail"
			}
			if exp.Data["onTimeout"] != want {
				t.Errorf("approval.expired %v", exp.Data)
			}
			waiting := []string{"run.queued", "run.started", "approval.requested gate", "run.waiting", "approval.expired gate"}
			if tc.onTimeout == "" {
				x.wantLog(id, append(waiting, "step.failed gate", "run.failed")...)
			} else {
				x.wantLog(id, append(waiting, "step.succeeded gate", "run.running", "step.started after#1", "step.succeeded after#1", "run.succeeded")...)
			}
		})
	}
}

// TestCancel: cancelling a run waiting for approval cancels its open steps,
// its pending request and the run; a later decision or delivery changes
// nothing, and cancelling again is CONFLICT.
func TestCancel(t *testing.T) {
	t.Parallel()
	x := newH(t)
	id, apr, _ := approvalRun(x, "")
	x.clock.Advance(time.Minute)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, id)
		return err
	})
	r := x.run(id)
	if r.Status != run.StatusCancelled || r.ErrorClass == nil || *r.ErrorClass != "cancelled" || r.FinishedAt == nil {
		t.Fatalf("run %v", r)
	}
	for step, want := range map[string]steprun.Status{"gate": steprun.StatusCancelled, "after": steprun.StatusCancelled} {
		if sr := x.step(id, step); sr.Status != want {
			t.Errorf("step %s: %s, want %s", step, sr.Status, want)
		}
	}
	if got := x.approvals(id)[0]; got.Status != approvalrequest.StatusCancelled {
		t.Errorf("request %s", got.Status)
	}
	ev := x.event(id, "run.cancelled", "")
	if ev.Data["by"] != "user_owner" || !ev.At.Equal(x.clock.Now()) {
		t.Errorf("run.cancelled %v at %v", ev.Data, ev.At)
	}
	want := []string{"run.queued", "run.started", "approval.requested gate", "run.waiting", "run.cancelled"}
	x.wantLog(id, want...)
	if len(stepTasks(x.rec.take())) != 0 {
		t.Error("cancel dispatched step tasks")
	}
	// Too late for anything else.
	if err := x.as("user_op", "operator").try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, true, "")
		return err
	}); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("decision after cancel: %v", err)
	}
	if err := x.try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, id)
		return err
	}); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("second cancel: %v", err)
	}
	x.clock.Advance(2 * time.Hour)
	if err := x.e.ExpireApproval(context.Background(), x.tenantID, apr.ID); err != nil {
		t.Fatal(err)
	}
	x.wantLog(id, want...)
	if r := x.run(id); r.Status != run.StatusCancelled {
		t.Errorf("run after late work: %s", r.Status)
	}
}

// TestResume: a step failing permanently fails the run at it; resuming
// runs it again under a new attempt, keeps the steps that succeeded, and
// the run succeeds. Only failed runs resume.
func TestResume(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newScript(t, 400)
	id := x.start(x.deploy(def("steps.call.output.body.hit",
		map[string]any{"id": "prep", "type": "transform", "output": "'p'"},
		map[string]any{"id": "call", "type": "http", "needs": []any{"prep"}, "request": map[string]any{"method": "GET", "url": srv.URL}},
	)), nil)
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusFailed || r.FailedStepID == nil || *r.FailedStepID != "call" || r.ErrorClass == nil || *r.ErrorClass != "permanent" {
		t.Fatalf("run %v", r)
	}
	failed := []string{"run.queued", "step.started prep#1", "run.started", "step.succeeded prep#1", "step.started call#1", "step.failed call#1", "run.failed"}
	x.wantLog(id, failed...)
	prep := x.step(id, "prep")

	srv.set(200)
	x.clock.Advance(time.Minute)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.ResumeRun(ctx, id)
		return err
	})
	if r := x.run(id); r.Status != run.StatusRunning || r.FailedStepID != nil || r.ErrorClass != nil || r.FinishedAt != nil {
		t.Fatalf("resumed run %v", r)
	}
	sr := x.step(id, "call")
	if sr.Status != steprun.StatusQueued || sr.Attempts != 2 || sr.ErrorClass != nil {
		t.Fatalf("resumed step %v", sr)
	}
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded || string(r.Output) != "1" {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	at := x.attempts(id, "call")
	if len(at) != 2 || at[0].Status != stepattempt.StatusFailed || at[1].Status != stepattempt.StatusSucceeded {
		t.Fatalf("attempts %v", at)
	}
	if again := x.step(id, "prep"); again.Attempts != 1 || !again.UpdatedAt.Equal(prep.UpdatedAt) {
		t.Errorf("prep ran again: %v", again)
	}
	if ev := x.event(id, "run.resumed", ""); ev.Data["by"] != "user_owner" {
		t.Errorf("run.resumed %v", ev.Data)
	}
	x.wantLog(id, append(failed, "run.resumed", "step.started call#2", "step.succeeded call#2", "run.succeeded")...)
	if err := x.try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.ResumeRun(ctx, id)
		return err
	}); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("resume of a succeeded run: %v", err)
	}
}

// TestReconcileLostTask: the queue lost a step's task; once it is past due
// by the grace the reconciler lists it and its delivery runs the step. A
// delay step waits until its end on the clock, and the reconciler wakes it.
func TestReconcileLostTask(t *testing.T) {
	t.Parallel()
	x := newH(t)
	id := x.start(x.deploy(def("steps.after.output",
		map[string]any{"id": "prep", "type": "transform", "output": "1"},
		map[string]any{"id": "wait", "type": "delay", "needs": []any{"prep"}, "duration": "30s"},
		map[string]any{"id": "after", "type": "transform", "needs": []any{"wait"}, "output": "2"},
	)), nil)
	lost := stepTasks(x.rec.take())
	if len(lost) != 1 || lost[0].StepID != "prep" {
		t.Fatalf("tasks %+v", lost)
	}
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 0 {
		t.Fatalf("due within the grace: %+v %v", due, err)
	}
	x.clock.Advance(3 * time.Second)
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 || due[0].ID != lost[0].ID || due[0].StepID != "prep" || due[0].Variant != "" {
		t.Fatalf("due past the grace: %+v %v", due, err)
	}
	if err := x.execute(due[0]); err != nil {
		t.Fatal(err)
	}
	x.drain() // the delay's task comes early: nothing
	wait := x.step(id, "wait")
	if wait.Status != steprun.StatusWaiting {
		t.Fatalf("delay step %s", wait.Status)
	}
	if wait.ReadyAt == nil || !wait.ReadyAt.Equal(x.clock.Now().Add(30*time.Second)) {
		t.Fatalf("delay ready at %v, want %v", wait.ReadyAt, x.clock.Now().Add(30*time.Second))
	}
	if r := x.run(id); r.Status == run.StatusSucceeded {
		t.Fatal("the delay did not wait")
	}
	x.clock.Advance(30*time.Second + 2*time.Second)
	due, err = x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 || due[0].StepID != "wait" {
		t.Fatalf("due after the delay: %+v %v", due, err)
	}
	if err := x.execute(due[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded || string(r.Output) != "2" {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	x.wantLog(id, "run.queued", "step.started prep#1", "run.started", "step.succeeded prep#1", "step.waiting wait#1", "run.waiting",
		"step.started wait#1", "run.running", "step.succeeded wait#1", "step.started after#1", "step.succeeded after#1", "run.succeeded")
	if ev := x.event(id, "step.succeeded", "wait"); !ev.At.Equal(x.clock.Now()) {
		t.Errorf("the delay ended at %v, the clock says %v", ev.At, x.clock.Now())
	}
}

// TestBudgetRefusal: a model call that could take the run over its
// maxCostUSD is refused before it is sent: the step fails with class
// budget, budget.exceeded is written, the provider sees nothing.
func TestBudgetRefusal(t *testing.T) {
	t.Parallel()
	x := newH(t)
	ai := newScript(t, 200)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.ctl.CreateCredential(ctx, x.envID, "openai", credential.TypeOpenai, map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"})
		return err
	})
	d := def("steps.draft.output.text",
		map[string]any{"id": "draft", "type": "llm", "credential": "openai", "model": "gpt-4o", "maxTokens": 1000,
			"messages": []any{map[string]any{"role": "user", "content": "Draft a reply"}}})
	d["maxCostUSD"] = 0.0001
	id := x.start(x.deploy(d), nil)
	x.drain()
	if ai.count() != 0 {
		t.Fatalf("the provider got %d requests", ai.count())
	}
	r := x.run(id)
	if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "budget" || r.CostMicroUsd != 0 {
		t.Fatalf("run %v", r)
	}
	at := x.attempts(id, "draft")
	if len(at) != 1 || at[0].Status != stepattempt.StatusFailed || at[0].ErrorClass == nil || *at[0].ErrorClass != "budget" {
		t.Fatalf("attempts %v", at)
	}
	ev := x.event(id, "budget.exceeded", "draft")
	if ev.Data["scope"] != "run" || ev.Data["limitMicroUSD"] != float64(100) || ev.Data["spentMicroUSD"] != float64(0) {
		t.Errorf("budget.exceeded %v", ev.Data)
	}
	x.wantLog(id, "run.queued", "step.started draft#1", "run.started", "budget.exceeded draft#1", "step.failed draft#1", "run.failed")
}

// hanger is a loopback server whose first `hang` requests block until
// released (or their caller gives up); later ones answer {"n": i}.
type hanger struct {
	*httptest.Server
	mu       sync.Mutex
	hits     int
	hang     int
	received chan int
	release  chan struct{}
}

func newHanger(t *testing.T, hang int) *hanger {
	s := &hanger{hang: hang, received: make(chan int, 16), release: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits++
		n := s.hits
		s.mu.Unlock()
		if n <= s.hang {
			s.received <- n
			select {
			case <-s.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"n":%d}`, n)
	}))
	t.Cleanup(func() {
		select {
		case <-s.release:
		default:
			close(s.release)
		}
		s.Close()
	})
	return s
}

// startWorker delivers ref in a goroutine, as one worker, and waits until
// its call reached the server; it returns how to kill that worker and the
// delivery's result channel.
func (x *h) startWorker(srv *hanger, ref AttemptRef) (kill func(), done chan error) {
	x.t.Helper()
	ctx, kill := context.WithCancel(context.Background())
	x.t.Cleanup(kill)
	done = make(chan error, 1)
	go func() { done <- x.e.ExecuteChain(ctx, x.tenantID, ref) }()
	select {
	case <-srv.received:
	case err := <-done:
		x.t.Fatalf("the worker returned (%v) before calling", err)
	case <-time.After(20 * time.Second):
		x.t.Fatal("the worker never called")
	}
	return kill, done
}

// takeoverTask advances the clock past the stale period and returns the
// reconciler's takeover task for the run's only running step.
func (x *h) takeoverTask() tasks.Task {
	x.t.Helper()
	x.clock.Advance(stale + 20*time.Second)
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 || due[0].Variant == "" {
		x.t.Fatalf("takeover due: %+v %v", due, err)
	}
	return due[0]
}

func ref(t tasks.Task) AttemptRef {
	return AttemptRef{RunID: t.RunID, StepID: t.StepID, ID: t.ID, CheckFirst: t.CheckFirst}
}

// TestCrashLimit: a step whose worker goes silent CrashLimit (3) times is
// not run again: the third takeover fails it with class crashed.
func TestCrashLimit(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newHanger(t, 100)
	id := x.start(x.deploy(def("", httpStep("call", srv.URL))), nil)
	task := stepTasks(x.rec.take())[0]
	for i := 0; i < 3; i++ {
		if i > 0 {
			task = x.takeoverTask()
		}
		kill, done := x.startWorker(srv, ref(task))
		kill()
		<-done
	}
	if err := x.execute(x.takeoverTask()); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	hits := srv.hits
	srv.mu.Unlock()
	if hits != 3 {
		t.Fatalf("the step was called %d times, want 3", hits)
	}
	r := x.run(id)
	if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "crashed" {
		t.Fatalf("run %v", r)
	}
	at := x.attempts(id, "call")
	if len(at) != 1 || at[0].Status != stepattempt.StatusFailed || *at[0].ErrorClass != "crashed" {
		t.Fatalf("attempts %v", at)
	}
	x.wantLog(id, "run.queued", "step.started call#1", "run.started", "step.reclaimed call#1", "step.reclaimed call#1",
		"step.failed call#1", "run.failed")
}

// TestLateFinishIsFenced: a worker presumed dead comes back after another
// took its attempt over and recorded it; its result is dropped.
func TestLateFinishIsFenced(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newHanger(t, 1)
	id := x.start(x.deploy(def("steps.call.output.body.n", httpStep("call", srv.URL))), nil)
	task := stepTasks(x.rec.take())[0]
	_, slow := x.startWorker(srv, ref(task))
	if err := x.execute(x.takeoverTask()); err != nil {
		t.Fatal(err)
	}
	if r := x.run(id); r.Status != run.StatusSucceeded || string(r.Output) != "2" {
		t.Fatalf("run after the takeover: %s %s", r.Status, r.Output)
	}
	finished := x.attempts(id, "call")[0]
	want := x.log(id)
	close(srv.release) // the first worker's call returns {"n":1}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if r := x.run(id); string(r.Output) != "2" {
		t.Errorf("the late result replaced the output: %s", r.Output)
	}
	if at := x.attempts(id, "call"); len(at) != 1 || !at[0].FinishedAt.Equal(*finished.FinishedAt) || at[0].Status != stepattempt.StatusSucceeded {
		t.Errorf("attempt after the late finish: %v", at)
	}
	x.wantLog(id, want...)
}

// TestRetriesExhausted: a step failing transiently on every attempt fails
// at its last one, and the run with it.
func TestRetriesExhausted(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newScript(t, 503)
	st := httpStep("call", srv.URL)
	st["retry"] = map[string]any{"maxAttempts": 2, "initialInterval": "10s", "maxInterval": "10s"}
	id := x.start(x.deploy(def("", st)), nil)
	x.drain()
	x.clock.Advance(10*time.Second + 2*time.Second + time.Millisecond)
	due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(due) != 1 {
		t.Fatalf("due %+v %v", due, err)
	}
	if err := x.execute(due[0]); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 2 {
		t.Fatalf("requests %d", srv.count())
	}
	r := x.run(id)
	if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "transient" || r.FailedStepID == nil || *r.FailedStepID != "call" {
		t.Fatalf("run %v", r)
	}
	at := x.attempts(id, "call")
	if len(at) != 2 || at[0].Status != stepattempt.StatusFailed || at[1].Status != stepattempt.StatusFailed {
		t.Fatalf("attempts %v", at)
	}
	x.wantLog(id, "run.queued", "step.started call#1", "run.started", "step.retrying call#1",
		"step.started call#2", "step.failed call#2", "run.failed")
}

// TestApprovalRejected: a rejection fails the step and the run, and the
// step after it never starts.
func TestApprovalRejected(t *testing.T) {
	t.Parallel()
	x := newH(t)
	id, apr, _ := approvalRun(x, "")
	x.as("user_op", "operator").in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, false, "no")
		return err
	})
	x.drain()
	if got := x.approvals(id)[0]; got.Status != approvalrequest.StatusRejected || *got.DecidedBy != "user_op" {
		t.Fatalf("request %v", got)
	}
	r := x.run(id)
	if r.Status != run.StatusFailed || r.FailedStepID == nil || *r.FailedStepID != "gate" {
		t.Fatalf("run %v", r)
	}
	if sr := x.step(id, "gate"); sr.Status != steprun.StatusFailed {
		t.Errorf("gate %s", sr.Status)
	}
	if sr := x.step(id, "after"); sr.Status != steprun.StatusPending && sr.Status != steprun.StatusCancelled && sr.Status != steprun.StatusSkipped {
		t.Errorf("after %s", sr.Status)
	}
	if at := x.attempts(id, "after"); len(at) != 0 {
		t.Errorf("the step after a rejection has attempts: %v", at)
	}
	x.wantLog(id, "run.queued", "run.started", "approval.requested gate", "run.waiting", "approval.decided gate", "step.failed gate", "run.failed")
}

// TestApprovalLastStep: approving a run's last open step leaves it to a
// worker (only workers evaluate a run's output): the decision records the
// request and sends the step's task; its delivery finishes the run.
func TestApprovalLastStep(t *testing.T) {
	t.Parallel()
	x := newH(t)
	id := x.start(x.deploy(def("'shipped'", approvalStep("gate", "1h", ""))), nil)
	x.drain()
	apr := x.approvals(id)[0]
	x.as("user_op", "operator").in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.DecideApproval(ctx, apr.ID, true, "")
		return err
	})
	if got := x.approvals(id)[0]; got.Status != approvalrequest.StatusApproved {
		t.Fatalf("request %s", got.Status)
	}
	if r := x.run(id); r.Status == run.StatusSucceeded {
		t.Fatal("the API finished the run")
	}
	sent := stepTasks(x.rec.take())
	if len(sent) != 1 || sent[0].StepID != "gate" {
		t.Fatalf("sent after the last decision: %+v", sent)
	}
	if err := x.execute(sent[0]); err != nil {
		t.Fatal(err)
	}
	if r := x.run(id); r.Status != run.StatusSucceeded || string(r.Output) != `"shipped"` {
		t.Fatalf("run %s output %s", r.Status, r.Output)
	}
	x.wantLog(id, "run.queued", "run.started", "approval.requested gate", "run.waiting", "approval.decided gate", "run.running", "step.succeeded gate", "run.succeeded")
}

// TestReturnedRunsLoadTheirEdges: the runs StartRun and CancelRun return
// were read by plain SQL; the GraphQL layer loads their edges (workflow,
// environment, steps) through the caller's transaction, as for a run Ent
// read.
func TestReturnedRunsLoadTheirEdges(t *testing.T) {
	t.Parallel()
	x := newH(t)
	wfID := x.deploy(def("steps.after.output",
		approvalStep("gate", "1h", ""),
		map[string]any{"id": "after", "type": "transform", "needs": []any{"gate"}, "output": "'done'"},
	))
	check := func(ctx context.Context, what string, r *ent.Run) {
		t.Helper()
		wf, err := r.Workflow(ctx)
		if err != nil || wf.ID != wfID {
			t.Errorf("%s: workflow edge %v, %v", what, wf, err)
		}
		env, err := r.Environment(ctx)
		if err != nil || env.ID != x.envID {
			t.Errorf("%s: environment edge %v, %v", what, env, err)
		}
		if n, err := r.QuerySteps().Count(ctx); err != nil || n != 2 {
			t.Errorf("%s: %d steps, %v", what, n, err)
		}
	}
	var id string
	x.in(func(ctx context.Context, _ *ent.Client) error {
		r, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wfID, EnvironmentID: x.envID})
		if err != nil {
			return err
		}
		id = r.ID
		check(ctx, "startRun", r)
		return nil
	})
	x.drain()
	x.in(func(ctx context.Context, _ *ent.Client) error {
		r, err := x.e.CancelRun(ctx, id)
		if err != nil {
			return err
		}
		check(ctx, "cancelRun", r)
		return nil
	})
}

// TestModelCostCountedOnce: a priced model call adds its cost to the step
// and the run once, in the database and in what live subscribers are told.
func TestModelCostCountedOnce(t *testing.T) {
	t.Parallel()
	x := newH(t)
	ai := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500}}`)
	}))
	t.Cleanup(ai.Close)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.ctl.CreateCredential(ctx, x.envID, "openai", credential.TypeOpenai, map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"})
		return err
	})
	id := x.start(x.deploy(def("steps.draft.output.text",
		map[string]any{"id": "draft", "type": "llm", "credential": "openai", "model": "gpt-4o", "maxTokens": 1000,
			"messages": []any{map[string]any{"role": "user", "content": "Draft a reply"}}})), nil)
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded || r.CostMicroUsd <= 0 {
		t.Fatalf("run %s, cost %d", r.Status, r.CostMicroUsd)
	}
	if sr := x.step(id, "draft"); sr.CostMicroUsd != r.CostMicroUsd {
		t.Errorf("step cost %d, run cost %d", sr.CostMicroUsd, r.CostMicroUsd)
	}
	var last *RunNotice
	x.rec.mu.Lock()
	for i := range x.rec.notices {
		if x.rec.notices[i].RunID == id {
			last = &x.rec.notices[i]
		}
	}
	x.rec.mu.Unlock()
	if last == nil || last.CostMicroUSD != r.CostMicroUsd {
		t.Errorf("live subscribers were told cost %v, the run holds %d", last, r.CostMicroUsd)
	}
}
