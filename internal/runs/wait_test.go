package runs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
)

// waitDef is prep -> paid (a wait for "paid" matching the run's order) ->
// after, whose output reads the event.
func waitDef(timeout, onTimeout string) map[string]any {
	paid := map[string]any{"id": "paid", "type": "wait", "needs": []any{"prep"}, "event": "paid",
		"match": "event.data.order == input.order"}
	if timeout != "" {
		paid["timeout"] = timeout
	}
	if onTimeout != "" {
		paid["onTimeout"] = onTimeout
	}
	return def("steps.after.output",
		map[string]any{"id": "prep", "type": "transform", "output": "1"},
		paid,
		map[string]any{"id": "after", "type": "transform", "needs": []any{"paid"}, "output": "steps.paid.output"})
}

// send sends an event to the development environment as the owner.
func (x *h) send(name string, data map[string]any, id string) *SendEventResult {
	x.t.Helper()
	var res *SendEventResult
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		in := SendEventInput{EnvironmentID: x.envID, Name: name, Data: data}
		if id != "" {
			in.ID = &id
		}
		res, err = x.e.SendEvent(ctx, in)
		return err
	})
	return res
}

// output decodes a run's output.
func output(t *testing.T, r *ent.Run) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Output, &m); err != nil {
		t.Fatalf("output %s: %v", r.Output, err)
	}
	return m
}

func TestWaitResumedBySendEvent(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.drain()
	if r := x.run(id); r.Status != run.StatusWaiting {
		t.Fatalf("run %s, want waiting", r.Status)
	}
	if sr := x.step(id, "paid"); sr.Status != steprun.StatusWaiting || sr.ReadyAt == nil || !sr.ReadyAt.Equal(x.clock.Now().Add(time.Hour)) {
		t.Fatalf("wait step: %+v", sr)
	}
	waiting := x.event(id, "step.waiting", "paid")
	if waiting.Data["event"] != "paid" || waiting.Data["waitID"] == "" || waiting.Data["callbackURL"] != nil {
		t.Errorf("step.waiting data: %v", waiting.Data)
	}

	// Another order's event, and another name: nothing resumes.
	if res := x.send("paid", map[string]any{"order": "o-2"}, ""); res.Resumed != 0 || res.Duplicate {
		t.Fatalf("other order: %+v", res)
	}
	if res := x.send("refunded", map[string]any{"order": "o-1"}, ""); res.Resumed != 0 {
		t.Fatalf("other name: %+v", res)
	}
	res := x.send("paid", map[string]any{"order": "o-1", "amount": 120}, "evt-1")
	if res.Resumed != 1 || res.Duplicate || res.Event.Name != "paid" {
		t.Fatalf("matching event: %+v", res)
	}
	// The same id again: the original event, nothing resumed.
	again := x.send("paid", map[string]any{"order": "o-1", "amount": 999}, "evt-1")
	if !again.Duplicate || again.Resumed != 0 || again.Event.ID != res.Event.ID {
		t.Fatalf("duplicate: %+v", again)
	}
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded {
		t.Fatalf("run %s: %v", r.Status, x.log(id))
	}
	out := output(t, r)
	if out["event"] != "paid" || out["id"] != "evt-1" || out["data"].(map[string]any)["amount"] != float64(120) || out["receivedAt"] == "" {
		t.Errorf("output: %v", out)
	}
	x.wantLog(id, "run.queued", "step.started prep#1", "run.started", "step.succeeded prep#1",
		"step.waiting paid#2", "run.waiting", "step.succeeded paid#2", "run.running",
		"step.started after#1", "step.succeeded after#1", "run.succeeded")

	// A late timer finds nothing to do.
	x.clock.Advance(2 * time.Hour)
	before := len(x.events(id))
	atts := x.attempts(id, "paid")
	if err := x.execute(tasks.Task{Kind: tasks.KindStep, TenantID: x.tenantID, RunID: id, StepID: "paid", ID: atts[len(atts)-1].ID}); err != nil {
		t.Fatal(err)
	}
	if n := len(x.events(id)); n != before {
		t.Errorf("a late timer wrote %d events", n-before)
	}
}

func TestWaitTakesAnEventSentBeforeItWaits(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("", ""))
	// Sent before the run: never taken by it.
	x.send("paid", map[string]any{"order": "o-1", "n": 0}, "")
	x.clock.Advance(time.Millisecond)
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.clock.Advance(time.Millisecond)
	// After the run started, before its wait began (prep has not run).
	x.send("paid", map[string]any{"order": "o-2", "n": 1}, "")
	x.send("paid", map[string]any{"order": "o-1", "n": 2}, "")
	x.send("paid", map[string]any{"order": "o-1", "n": 3}, "")
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded {
		t.Fatalf("run %s: %v", r.Status, x.log(id))
	}
	if n := output(t, r)["data"].(map[string]any)["n"]; n != float64(2) {
		t.Errorf("took event %v, want the oldest matching one (2)", n)
	}
	x.wantLog(id, "run.queued", "step.started prep#1", "run.started", "step.succeeded prep#1",
		"step.succeeded paid#1", "step.started after#1", "step.succeeded after#1", "run.succeeded")
}

func TestWaitTakesAnEventOncePerRun(t *testing.T) {
	x := newH(t)
	wf := x.deploy(def("",
		map[string]any{"id": "a", "type": "wait", "event": "tick"},
		map[string]any{"id": "b", "type": "wait", "event": "tick", "needs": []any{"a"}}))
	id := x.start(wf, nil)
	x.drain()
	res := x.send("tick", map[string]any{"n": 1}, "")
	if res.Resumed != 1 {
		t.Fatalf("first tick resumed %d", res.Resumed)
	}
	x.drain()
	// b waits now; the first tick was a's, so it waits for another.
	if sr := x.step(id, "b"); sr.Status != steprun.StatusWaiting {
		t.Fatalf("b: %s %v", sr.Status, x.log(id))
	}
	x.clock.Advance(time.Millisecond)
	other := x.start(wf, nil) // a run started after the first tick does not take it
	x.drain()
	if sr := x.step(other, "a"); sr.Status != steprun.StatusWaiting {
		t.Fatalf("a of the second run: %s", sr.Status)
	}
	// One event resumes both runs (broadcast), one step each.
	if res := x.send("tick", map[string]any{"n": 2}, ""); res.Resumed != 2 {
		t.Fatalf("second tick resumed %d", res.Resumed)
	}
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded {
		t.Fatalf("run %s", r.Status)
	}
	if sr := x.step(other, "b"); sr.Status != steprun.StatusWaiting {
		t.Errorf("b of the second run took the tick its a took: %s", sr.Status)
	}
}

func TestWaitTimeout(t *testing.T) {
	for _, onTimeout := range []string{"fail", "continue"} {
		t.Run(onTimeout, func(t *testing.T) {
			x := newH(t)
			wf := x.deploy(def("", map[string]any{"id": "paid", "type": "wait", "event": "paid", "timeout": "10m", "onTimeout": onTimeout}))
			id := x.start(wf, nil)
			x.drain()
			x.clock.Advance(9 * time.Minute)
			if due, _ := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{}); len(due) != 0 {
				t.Fatalf("due before the deadline: %v", due)
			}
			x.clock.Advance(2*time.Minute + 3*time.Second)
			due, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
			if err != nil || len(due) != 1 {
				t.Fatalf("due after the deadline: %v %v", due, err)
			}
			if err := x.execute(due[0]); err != nil {
				t.Fatal(err)
			}
			x.drain()
			r := x.run(id)
			if onTimeout == "fail" {
				if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "timeout" || !strings.Contains(*r.ErrorMessage, `no "paid" event came within 10m`) {
					t.Fatalf("run: %s %v %v", r.Status, r.ErrorClass, r.ErrorMessage)
				}
				// A late event resumes nothing, and a resume waits again.
				if res := x.send("paid", nil, ""); res.Resumed != 0 {
					t.Fatalf("an event resumed a failed run")
				}
				x.in(func(ctx context.Context, _ *ent.Client) error { _, err := x.e.ResumeRun(ctx, id); return err })
				x.drain()
				// The event sent while it had failed came after the run
				// started and nothing took it: the new wait takes it.
				if r := x.run(id); r.Status != run.StatusSucceeded {
					t.Fatalf("resumed run %s: %v", r.Status, x.log(id))
				}
				return
			}
			if out := output(t, r); r.Status != run.StatusSucceeded || len(out) != 1 || out["paid"].(map[string]any)["timedOut"] != true {
				t.Fatalf("run: %s %s", r.Status, r.Output)
			}
		})
	}
}

func TestWaitCallback(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.drain()
	waitID := x.event(id, "step.waiting", "paid").Data["waitID"].(string)
	var path string
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		path, err = x.e.CallbackPath(ctx, waitID)
		return err
	})
	token := strings.TrimPrefix(path, CallbackPathPrefix)
	if !strings.HasPrefix(token, x.tenantID+".") || len(token) != len(x.tenantID)+1+43 {
		t.Fatalf("callback path %q", path)
	}
	// Viewers do not see it: it resolves the wait.
	x.as("viewer", "viewer").in(func(ctx context.Context, _ *ent.Client) error {
		if p, err := x.e.CallbackPath(ctx, waitID); p != "" || err != nil {
			t.Errorf("a viewer got %q %v", p, err)
		}
		return nil
	})
	bad := token[:len(token)-1] + "A"
	if token[len(token)-1] == 'A' {
		bad = token[:len(token)-1] + "B"
	}
	for _, tok := range []string{bad, "nope", "ten_01aaaaaaaaaaaaaaaaaaaaaaaa." + strings.Repeat("a", 43)} {
		if err := x.e.Callback(context.Background(), tok, nil); errs.CodeOf(err) != errs.NotFound {
			t.Errorf("token %q: %v", tok, err)
		}
	}
	// The match applies to events, not to the step's own callback.
	if err := x.e.Callback(context.Background(), token, map[string]any{"order": "anything"}); err != nil {
		t.Fatal(err)
	}
	if err := x.e.Callback(context.Background(), token, map[string]any{"again": true}); !errors.Is(err, ErrCallbackGone) {
		t.Errorf("second callback: %v", err)
	}
	x.drain()
	r := x.run(id)
	out := output(t, r)
	if r.Status != run.StatusSucceeded || out["id"] != waitID || out["data"].(map[string]any)["order"] != "anything" {
		t.Fatalf("run %s output %v", r.Status, out)
	}
}

func TestWaitCancelEndsCallback(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.drain()
	waitID := x.event(id, "step.waiting", "paid").Data["waitID"].(string)
	var path string
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		path, err = x.e.CallbackPath(ctx, waitID)
		return err
	})
	x.in(func(ctx context.Context, _ *ent.Client) error { _, err := x.e.CancelRun(ctx, id); return err })
	if err := x.e.Callback(context.Background(), strings.TrimPrefix(path, CallbackPathPrefix), nil); !errors.Is(err, ErrCallbackGone) {
		t.Errorf("callback of a cancelled run: %v", err)
	}
	if res := x.send("paid", map[string]any{"order": "o-1"}, ""); res.Resumed != 0 {
		t.Errorf("an event resumed a cancelled run")
	}
	if r := x.run(id); r.Status != run.StatusCancelled {
		t.Errorf("run %s", r.Status)
	}
}

// TestWaitStartsWhileAnEventIsSent: a wait that starts while a request
// sending an event of its name is in flight (holding the name's lock) does
// not wait for it, and looks at the stored events again a moment later:
// the event is taken, not lost between the two.
func TestWaitStartsWhileAnEventIsSent(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	sent, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- store.InTenant(x.ctx, x.e.client, func(ctx context.Context) error {
			res, err := x.e.SendEvent(ctx, SendEventInput{EnvironmentID: x.envID, Name: "paid", Data: map[string]any{"order": "o-1"}})
			if err == nil && res.Resumed != 0 {
				err = errors.New("resumed a wait that had not begun")
			}
			close(sent)
			<-release // commit only after the wait began
			return err
		})
	}()
	<-sent
	later := x.drainDue() // the wait begins, cannot look at the stored events
	sr := x.step(id, "paid")
	if sr.Status != steprun.StatusWaiting || sr.ReadyAt == nil || !sr.ReadyAt.Equal(x.clock.Now().Add(rescanAfter)) {
		t.Fatalf("wait step: %s ready %v", sr.Status, sr.ReadyAt)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	x.clock.Advance(rescanAfter)
	if len(later) != 1 || !later[0].At.Equal(x.clock.Now()) {
		t.Fatalf("wake-ups: %+v", later)
	}
	if err := x.execute(later[0]); err != nil {
		t.Fatal(err)
	}
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded {
		t.Fatalf("run %s: %v", r.Status, x.log(id))
	}
}

// drainDue is drain for the step tasks due now; it returns the others.
func (x *h) drainDue() []tasks.Task {
	x.t.Helper()
	var later []tasks.Task
	for i := 0; i < 100; i++ {
		taken := x.rec.take()
		if len(taken) == 0 {
			return later
		}
		for _, t := range taken {
			if t.Kind != tasks.KindStep || t.At.After(x.clock.Now()) {
				later = append(later, t)
				continue
			}
			if err := x.execute(t); err != nil {
				x.t.Fatalf("execute %s/%s: %v", t.StepID, t.ID, err)
			}
		}
	}
	x.t.Fatal("tasks keep coming")
	return nil
}

func TestSendEventRefusesBadInput(t *testing.T) {
	x := newH(t)
	big := map[string]any{"s": strings.Repeat("x", MaxEventDataBytes)}
	long := strings.Repeat("i", 256)
	for _, tc := range []struct {
		in   SendEventInput
		path string
	}{
		{SendEventInput{EnvironmentID: x.envID, Name: ""}, "input.name"},
		{SendEventInput{EnvironmentID: x.envID, Name: "Bad Name"}, "input.name"},
		{SendEventInput{EnvironmentID: x.envID, Name: "ok", Data: big}, "input.data"},
		{SendEventInput{EnvironmentID: x.envID, Name: "ok", ID: &long}, "input.id"},
		{SendEventInput{EnvironmentID: "env_01aaaaaaaaaaaaaaaaaaaaaaaa", Name: "ok"}, "input.environmentID"},
	} {
		err := x.try(func(ctx context.Context, _ *ent.Client) error { _, err := x.e.SendEvent(ctx, tc.in); return err })
		e, ok := errs.As(err)
		if !ok || len(e.Problems) == 0 || e.Problems[0].Path != tc.path {
			t.Errorf("%s: %v", tc.path, err)
		}
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n, err := c.InboundEvent.Query().Count(ctx); err != nil || n != 0 {
			t.Errorf("stored %d events (%v)", n, err)
		}
		return nil
	})
}

func TestWaitSandboxReplayUsesTheRecordedOutput(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.drain()
	x.send("paid", map[string]any{"order": "o-1", "amount": 5}, "")
	x.drain()
	src := x.run(id)
	x.clock.Advance(time.Millisecond)
	replay := func(sandbox bool) string {
		var rid string
		x.in(func(ctx context.Context, _ *ent.Client) error {
			r, err := x.e.ReplayRun(ctx, ReplayInput{RunID: id, Sandbox: sandbox})
			if err == nil {
				rid = r.ID
			}
			return err
		})
		x.drain()
		return rid
	}
	sb := x.run(replay(true))
	if sb.Status != run.StatusSucceeded || string(sb.Output) != string(src.Output) {
		t.Fatalf("sandbox replay %s %s, source %s", sb.Status, sb.Output, src.Output)
	}
	// A live replay waits for an event of its own: the source's was taken
	// before it was created.
	if live := x.run(replay(false)); live.Status != run.StatusWaiting {
		t.Fatalf("live replay %s", live.Status)
	}
}

// TestSendEventConcurrentDuplicates: concurrent sends of one id store one
// event and resume the waiting step once.
func TestSendEventConcurrentDuplicates(t *testing.T) {
	x := newH(t)
	wf := x.deploy(waitDef("1h", ""))
	id := x.start(wf, map[string]any{"order": "o-1"})
	x.drain()
	const n = 8
	type result struct {
		res *SendEventResult
		err error
	}
	out := make(chan result, n)
	for range n {
		go func() {
			var r result
			r.err = store.InTenant(x.ctx, x.e.client, func(ctx context.Context) error {
				id := "same"
				var err error
				r.res, err = x.e.SendEvent(ctx, SendEventInput{EnvironmentID: x.envID, Name: "paid", Data: map[string]any{"order": "o-1"}, ID: &id})
				return err
			})
			out <- r
		}()
	}
	stored, resumed := 0, 0
	for range n {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		if !r.res.Duplicate {
			stored++
		}
		resumed += r.res.Resumed
	}
	if stored != 1 || resumed != 1 {
		t.Fatalf("stored %d events, resumed %d steps; want 1 and 1", stored, resumed)
	}
	x.drain()
	if r := x.run(id); r.Status != run.StatusSucceeded {
		t.Fatalf("run %s", r.Status)
	}
}
