package runs

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/auditlog"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/limits"
	"github.com/sluicehq/sluice/internal/tasks"
)

// gate is an HTTP server whose calls wait until released, and that
// records how many were in flight at once.
type gate struct {
	*httptest.Server
	mu       sync.Mutex
	inFlight int
	maxSeen  int
	calls    int
	release  chan struct{}
}

func newGate(t *testing.T) *gate {
	g := &gate{release: make(chan struct{}, 100)}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.inFlight++
		g.calls++
		g.maxSeen = max(g.maxSeen, g.inFlight)
		g.mu.Unlock()
		select {
		case <-g.release:
		case <-r.Context().Done():
		}
		g.mu.Lock()
		g.inFlight--
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(func() { close(g.release); g.Close() })
	return g
}

func (g *gate) state() (inFlight, maxSeen, calls int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight, g.maxSeen, g.calls
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// limitDef is a one-step workflow whose http step names limit.
func limitDef(url, limit string) map[string]any {
	return def("steps.call.output.body.ok", map[string]any{"id": "call", "type": "http", "limit": limit,
		"request": map[string]any{"method": "GET", "url": url}})
}

// setLimit sets a named limit of the harness's tenant.
func (x *h) setLimit(name string, n int) {
	x.t.Helper()
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := limits.New(x.e).Set(ctx, name, n)
		return err
	})
}

// TestNamedLimitAcrossWorkflows: limit 2 shared by two workflows. Of five
// steps delivered at once, two run and three are held (named_limit, no
// ready_at, no task); never more than two calls are in flight; each step
// that finishes releases the oldest held one, in order; fair dispatch's
// release leaves them alone; all runs succeed.
func TestNamedLimitAcrossWorkflows(t *testing.T) {
	x := newH(t)
	g := newGate(t)
	x.setLimit("crm-api", 2)
	wfA := x.deploy(limitDef(g.URL, "crm-api"))
	wfB := x.deploy(limitDef(g.URL, "crm-api"))
	var runIDs []string
	for i := range 5 {
		wf := wfA
		if i%2 == 1 {
			wf = wfB
		}
		runIDs = append(runIDs, x.start(wf, nil))
	}
	sent := stepTasks(x.rec.take())
	if len(sent) != 5 {
		t.Fatalf("sent %d step tasks, want 5", len(sent))
	}
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errList []error
	exec := func(tk tasks.Task) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := x.execute(tk); err != nil {
				errMu.Lock()
				errList = append(errList, err)
				errMu.Unlock()
			}
		}()
	}
	for _, tk := range sent {
		exec(tk)
	}
	eventually(t, "two calls in flight and three steps held", func() bool {
		in, _, _ := g.state()
		return in == 2 && len(x.held()) == 3
	})
	held := x.held()
	for _, hs := range held {
		if hs.Reason != "named_limit" || hs.LimitName == nil || *hs.LimitName != "crm-api" {
			t.Fatalf("held %+v, want reason named_limit for crm-api", hs)
		}
		if sr := x.step(hs.RunID, "call"); sr.Status != steprun.StatusQueued || sr.ReadyAt != nil {
			t.Fatalf("held step %s: %s readyAt %v", hs.RunID, sr.Status, sr.ReadyAt)
		}
	}
	// The order they are released in: priority, since, id.
	order := make([]string, len(held))
	for i, hs := range held {
		order[i] = hs.ID
	}
	slices.Sort(order) // equal since (the test clock stands still): by id
	if n, err := x.e.ReleaseHeld(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("fair dispatch released %d (%v) named-limit steps", n, err)
	}
	if n, err := x.e.ReleaseLimits(context.Background(), x.tenantID); err != nil || n != 0 {
		t.Fatalf("the sweep released %d (%v) while the limit is full", n, err)
	}
	if got := stepTasks(x.rec.take()); len(got) != 0 {
		t.Fatalf("sent %d tasks while the limit is full", len(got))
	}
	for i := range 3 {
		g.release <- struct{}{} // one running call ends
		var next []tasks.Task
		eventually(t, "a held step released", func() bool {
			next = append(next, stepTasks(x.rec.take())...)
			return len(next) > 0
		})
		if len(next) != 1 {
			t.Fatalf("release %d sent %d tasks, want 1", i, len(next))
		}
		sr := x.step(next[0].RunID, "call")
		if sr.ID != order[i] {
			t.Fatalf("release %d: step %s, want the oldest held %s", i, sr.ID, order[i])
		}
		if sr.LimitName == nil || *sr.LimitName != "crm-api" || sr.ReadyAt == nil {
			t.Fatalf("released step: limit %v readyAt %v", sr.LimitName, sr.ReadyAt)
		}
		exec(next[0])
		eventually(t, "the released step's call", func() bool {
			in, _, calls := g.state()
			return in == 2 && calls == 3+i
		})
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	wg.Wait()
	if len(errList) > 0 {
		t.Fatal(errList)
	}
	if _, maxSeen, calls := g.state(); maxSeen != 2 || calls != 5 {
		t.Fatalf("calls %d, at most %d in flight: want 5 and 2", calls, maxSeen)
	}
	for _, id := range runIDs {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
	if h := x.held(); len(h) != 0 {
		t.Fatalf("held left: %+v", h)
	}
}

// TestNamedLimitSweepRecovers: a step that left the limit without
// releasing the held one (its transaction was lost) is recovered by the
// sweep; a held step of a cancelled run leaves held_steps and is never sent.
func TestNamedLimitSweepRecovers(t *testing.T) {
	x := newH(t)
	g := newGate(t)
	x.setLimit("crm-api", 1)
	wf := x.deploy(limitDef(g.URL, "crm-api"))
	r1, r2, r3 := x.start(wf, nil), x.start(wf, nil), x.start(wf, nil)
	sent := stepTasks(x.rec.take())
	if len(sent) != 3 {
		t.Fatalf("sent %d", len(sent))
	}
	// r1 claims the slot, then r2 and r3 are held.
	done := make(chan error, 1)
	go func() { done <- x.execute(tasksOfRun(sent, r1)[0]) }()
	eventually(t, "r1's call", func() bool { in, _, _ := g.state(); return in == 1 })
	for _, id := range []string{r2, r3} {
		if err := x.execute(tasksOfRun(sent, id)[0]); err != nil {
			t.Fatal(err)
		}
	}
	if h := x.held(); len(h) != 2 {
		t.Fatalf("held %d, want 2", len(h))
	}
	// r2 is cancelled while held.
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, r2)
		return err
	})
	// r1's step ends behind the state machine's back: nothing released.
	sys := privacy.DecisionContext(context.Background(), privacy.Allow)
	sr1 := x.step(r1, "call")
	if err := testDB.Owner.StepRun.UpdateOneID(sr1.ID).SetStatus(steprun.StatusFailed).Exec(sys); err != nil {
		t.Fatal(err)
	}
	n, err := x.e.ReleaseLimits(context.Background(), x.tenantID)
	if err != nil || n != 1 {
		t.Fatalf("sweep released %d (%v), want 1", n, err)
	}
	got := stepTasks(x.rec.take())
	if len(got) != 1 || got[0].RunID != r3 {
		t.Fatalf("sweep sent %v, want r3's step only", got)
	}
	if h := x.held(); len(h) != 0 {
		t.Fatalf("held rows left: %+v (the cancelled run's must go)", h)
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	x.runAll(got)
	if r := x.run(r3); r.Status != run.StatusSucceeded {
		t.Fatalf("r3 %s", r.Status)
	}
	if r := x.run(r2); r.Status != run.StatusCancelled {
		t.Fatalf("r2 %s", r.Status)
	}
}

// TestNamedLimitDeletedRunsUnlimited: a limit deleted while steps are
// held for it releases them, and its steps run unlimited; a version that
// names an unknown limit is refused at the step's limit path.
func TestNamedLimitDeletedRunsUnlimited(t *testing.T) {
	x := newH(t)
	g := newGate(t)
	x.setLimit("solo", 1)
	wf := x.deploy(limitDef(g.URL, "solo"))
	r1, r2 := x.start(wf, nil), x.start(wf, nil)
	sent := stepTasks(x.rec.take())
	done := make(chan error, 2)
	go func() { done <- x.execute(tasksOfRun(sent, r1)[0]) }()
	eventually(t, "r1's call", func() bool { in, _, _ := g.state(); return in == 1 })
	if err := x.execute(tasksOfRun(sent, r2)[0]); err != nil {
		t.Fatal(err)
	}
	if len(x.held()) != 1 {
		t.Fatal("r2 not held")
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := limits.New(x.e).Delete(ctx, "solo")
		return err
	})
	got := stepTasks(x.rec.take())
	if len(got) != 1 || got[0].RunID != r2 {
		t.Fatalf("delete sent %v, want r2's step", got)
	}
	go func() { done <- x.execute(got[0]) }()
	eventually(t, "two calls at once", func() bool { in, _, _ := g.state(); return in == 2 })
	g.release <- struct{}{}
	g.release <- struct{}{}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{r1, r2} {
		if r := x.run(id); r.Status != run.StatusSucceeded {
			t.Fatalf("run %s: %s", id, r.Status)
		}
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		actions, err := c.AuditLog.Query().Where(auditlog.TargetType("ConcurrencyLimit")).
			Order(ent.Asc(auditlog.FieldCreatedAt)).Select(auditlog.FieldAction).Strings(ctx)
		if err != nil {
			return err
		}
		if !slices.Equal(actions, []string{"concurrency_limit.create", "concurrency_limit.delete"}) {
			t.Errorf("audit actions %v, want create then delete", actions)
		}
		return nil
	})
	err := x.try(func(ctx context.Context, c *ent.Client) error {
		w, err := x.ctl.CreateWorkflow(ctx, "wf", "wf-"+randHex(4), "")
		if err != nil {
			return err
		}
		_, err = x.ctl.CreateWorkflowVersion(ctx, w.ID, limitDef(g.URL, "solo"))
		return err
	})
	if err == nil || !containsPath(err, "$.steps[0].limit") {
		t.Fatalf("a version naming a deleted limit: %v, want VALIDATION at $.steps[0].limit", err)
	}
}

// containsPath reports whether err is a VALIDATION error with a problem at path.
func containsPath(err error, path string) bool {
	e, ok := errs.As(err)
	if !ok || e.Code != errs.Validation {
		return false
	}
	return slices.ContainsFunc(e.Problems, func(p errs.Problem) bool { return p.Path == path })
}
