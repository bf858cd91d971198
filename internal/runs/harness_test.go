package runs

// The state machine's tests run the engine against a real Postgres: one
// database per package run, migrated the way `sluice migrate up` does (with
// the app role), one tenant per test created the way `sluice tenant create`
// does, and the engine on the app role's pool, so RLS applies. Only the
// engine's wake-up transport (the Dispatcher) and its live fan-out (the
// Publisher) are replaced, by recorders: the durable state is Postgres's.
// The engine's clock is injected and advanced by hand; nothing waits.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

// testDB is the package run's database (internal/testdb): the owner's
// client (tenant provisioning) and the app role's (the engine's).
var testDB *testdb.DB

func randHex(n int) string { return testdb.RandHex(n) }

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "enginetest", &testDB))
}

// recorder is the Dispatcher and the Publisher: it keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	tasks   []tasks.Task
	notices []RunNotice
}

func (r *recorder) Dispatch(_ context.Context, ts []tasks.Task) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks = append(r.tasks, ts...)
	return nil
}

func (r *recorder) Publish(_ context.Context, n RunNotice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notices = append(r.notices, n)
}

// take returns and forgets the tasks dispatched so far.
func (r *recorder) take() []tasks.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.tasks
	r.tasks = nil
	return out
}

// h is one test's world: a tenant of its own and an engine on the shared
// database with an injected clock.
type h struct {
	t        *testing.T
	e        *Service
	ctl      *control.Service // to create workflows and credentials
	clock    *testdb.Clock
	rec      *recorder
	tenantID string
	envID    string
	ctx      context.Context // the tenant's owner
}

// stale is the engine's heartbeat stale period in these tests: long enough
// that no real heartbeat fires while a test runs; the clock crosses it.
const stale = time.Hour

func newH(t *testing.T) *h {
	t.Helper()
	ctx := context.Background()
	tenantID, err := testDB.Tenant(ctx, "engine test")
	if err != nil {
		t.Fatal(err)
	}
	// Postgres keeps microseconds: so does the clock.
	clk := testdb.NewClock(time.Now())
	rec := &recorder{}
	loopback := egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	e := New(Options{
		Vault:          vault.New(secrets.DevKeyRing()),
		Client:         testDB.App,
		Dispatcher:     rec,
		Publisher:      rec,
		Executor:       steps.NewExecutor(egress.NewClient(loopback)),
		HeartbeatStale: stale,
		Now:            clk.Now,
	})
	x := &h{t: t, e: e, ctl: control.New(control.Options{Vault: vault.New(secrets.DevKeyRing()), Now: clk.Now}), clock: clk, rec: rec, tenantID: tenantID,
		ctx: viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	x.in(func(ctx context.Context, c *ent.Client) error {
		env, err := c.Environment.Query().Where(environment.Name("development")).Only(ctx)
		if err != nil {
			return err
		}
		x.envID = env.ID
		return nil
	})
	return x
}

// in runs fn in one transaction of the tenant as its owner; an error fails
// the test.
func (x *h) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	if err := x.try(fn); err != nil {
		x.t.Fatal(err)
	}
}

// try is in returning fn's error (the transaction rolled back).
func (x *h) try(fn func(ctx context.Context, c *ent.Client) error) error {
	return store.InTenant(x.ctx, x.e.client, func(ctx context.Context) error {
		return fn(ctx, ent.FromContext(ctx))
	})
}

// as returns x acting as another member of the tenant.
func (x *h) as(subject string, roles ...string) *h {
	y := *x
	y.ctx = viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: x.tenantID, Subject: subject, Roles: roles})
	return &y
}

// deploy creates, publishes and deploys a workflow in the development
// environment and returns its id.
func (x *h) deploy(def map[string]any) string {
	x.t.Helper()
	var wfID string
	x.in(func(ctx context.Context, c *ent.Client) error {
		wf, err := x.ctl.CreateWorkflow(ctx, "wf", "wf-"+randHex(4), "")
		if err != nil {
			return err
		}
		v, err := x.ctl.CreateWorkflowVersion(ctx, wf.ID, def)
		if err != nil {
			return err
		}
		if _, err := x.ctl.PublishWorkflowVersion(ctx, v.ID); err != nil {
			return err
		}
		if _, err := x.ctl.DeployWorkflowVersion(ctx, v.ID, x.envID); err != nil {
			return err
		}
		wfID = wf.ID
		return nil
	})
	return wfID
}

// start starts a run of the workflow and returns its id.
func (x *h) start(wfID string, input map[string]any) string {
	x.t.Helper()
	var id string
	x.in(func(ctx context.Context, _ *ent.Client) error {
		r, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wfID, EnvironmentID: x.envID, Input: input})
		if err != nil {
			return err
		}
		id = r.ID
		return nil
	})
	return id
}

// execute delivers one step task as the worker's handleStep does.
func (x *h) execute(t tasks.Task) error {
	return x.e.ExecuteChain(context.Background(), t.TenantID, AttemptRef{RunID: t.RunID, StepID: t.StepID, ID: t.ID, CheckFirst: t.CheckFirst})
}

// executeAll delivers each task in ts (execute); an error fails the test.
func (x *h) executeAll(ts []tasks.Task) {
	x.t.Helper()
	for _, t := range ts {
		if err := x.execute(t); err != nil {
			x.t.Fatalf("execute %s/%s: %v", t.StepID, t.ID, err)
		}
	}
}

// drain delivers every dispatched step task, and those they dispatch, until
// none is left; it returns the other tasks (approval timeouts...).
func (x *h) drain() []tasks.Task {
	x.t.Helper()
	var other []tasks.Task
	for i := 0; i < 100; i++ {
		taken := x.rec.take()
		if len(taken) == 0 {
			return other
		}
		for _, t := range taken {
			if t.Kind != tasks.KindStep {
				other = append(other, t)
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

// run reads the run.
func (x *h) run(id string) *ent.Run {
	x.t.Helper()
	var r *ent.Run
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		r, err = c.Run.Get(ctx, id)
		return err
	})
	return r
}

// step reads one step of the run.
func (x *h) step(runID, stepID string) *ent.StepRun {
	x.t.Helper()
	var sr *ent.StepRun
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		sr, err = c.StepRun.Query().Where(steprun.RunID(runID), steprun.StepID(stepID)).Only(ctx)
		return err
	})
	return sr
}

// attempts reads a step's attempts in order.
func (x *h) attempts(runID, stepID string) []*ent.StepAttempt {
	x.t.Helper()
	var out []*ent.StepAttempt
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.StepAttempt.Query().Where(stepattempt.RunID(runID), stepattempt.StepID(stepID)).
			Order(ent.Asc(stepattempt.FieldNumber)).All(ctx)
		return err
	})
	return out
}

// approvals reads the run's approval requests.
func (x *h) approvals(runID string) []*ent.ApprovalRequest {
	x.t.Helper()
	var out []*ent.ApprovalRequest
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.ApprovalRequest.Query().Where(approvalrequest.RunID(runID)).All(ctx)
		return err
	})
	return out
}

// events reads the run's event log in order.
func (x *h) events(runID string) []*ent.RunEvent {
	x.t.Helper()
	var out []*ent.RunEvent
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.RunEvent.Query().Where(runevent.RunID(runID)).Order(ent.Asc(runevent.FieldSeq)).All(ctx)
		return err
	})
	return out
}

// log renders the run's events as "type" or "type step#attempt", in order.
func (x *h) log(runID string) []string {
	x.t.Helper()
	var out []string
	for i, ev := range x.events(runID) {
		if ev.Seq != int64(i+1) {
			x.t.Errorf("event %d has seq %d: the log has a gap", i+1, ev.Seq)
		}
		s := ev.Type
		if ev.StepID != nil {
			s += " " + *ev.StepID
			if ev.Attempt != nil && *ev.Attempt > 0 {
				s += fmt.Sprintf("#%d", *ev.Attempt)
			}
		}
		out = append(out, s)
	}
	return out
}

// wantLog fails unless the run's event log is want exactly.
func (x *h) wantLog(runID string, want ...string) {
	x.t.Helper()
	if got := x.log(runID); !slices.Equal(got, want) {
		x.t.Errorf("events:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// event returns the run's only event of type typ for stepID.
func (x *h) event(runID, typ, stepID string) *ent.RunEvent {
	x.t.Helper()
	var found *ent.RunEvent
	for _, ev := range x.events(runID) {
		if ev.Type == typ && (stepID == "" || (ev.StepID != nil && *ev.StepID == stepID)) {
			if found != nil {
				x.t.Fatalf("two %s events for %q", typ, stepID)
			}
			found = ev
		}
	}
	if found == nil {
		x.t.Fatalf("no %s event for %q", typ, stepID)
	}
	return found
}

// stepTasks returns the step tasks among ts.
func stepTasks(ts []tasks.Task) []tasks.Task {
	var out []tasks.Task
	for _, t := range ts {
		if t.Kind == tasks.KindStep {
			out = append(out, t)
		}
	}
	return out
}

func def(output string, list ...map[string]any) map[string]any {
	s := make([]any, len(list))
	for i, st := range list {
		s[i] = st
	}
	d := map[string]any{"schemaVersion": 1, "steps": s}
	if output != "" {
		d["output"] = output
	}
	return d
}
