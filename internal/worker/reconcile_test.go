package worker

// The reconciler's tests run ReconcileOnce against a real Postgres (a
// database of the package run's own, internal/testdb) and a reserved Redis
// database: the state is built through the run state machine, the control
// plane and the webhook service with an injected clock, a task is "lost" by
// deleting it from asynq, and the assertions read the queues (inspector)
// and Postgres.

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "workertest", &testDB))
}

const (
	// grace is the reconciler's: how late a queued step or a delivery
	// must be before it is re-sent.
	grace = 5 * time.Second
	// stale is the engine's heartbeat stale period: no real heartbeat
	// fires while a test runs; the clock crosses it.
	stale = time.Hour
)

// world is one test's tenant, services and worker, on the package's
// database and a Redis database of the test's own.
type world struct {
	t        *testing.T
	clock    *testdb.Clock
	insp     *asynq.Inspector
	d        *Dispatcher
	runs     *runs.Service
	hooks    *webhook.Service
	ctl      *control.Service
	w        *Worker
	tenantID string
	envID    string
	ctx      context.Context // the tenant's owner
}

func newWorld(t *testing.T) *world {
	t.Helper()
	rdb := testdb.Redis(t, "worker-test")
	d := NewDispatcher(asynq.NewClientFromRedisClient(rdb), rdb)
	// The clock runs a day behind the wall clock, so what the services
	// send "now" is due now for asynq too (not scheduled), however far a
	// test advances it. Postgres keeps microseconds: so does the clock.
	clk := testdb.NewClock(time.Now().Add(-24 * time.Hour))
	loopback := egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	v := vault.New(secrets.DevKeyRing())
	hooks := webhook.NewService(webhook.ServiceOptions{Client: testDB.App, Vault: v, Dispatcher: d,
		Options: webhook.Options{Egress: loopback}, Log: quietLog(), Now: clk.Now})
	r := runs.New(runs.Options{Client: testDB.App, Vault: v, Dispatcher: d, Outbox: hooks,
		Executor: steps.NewExecutor(egress.NewClient(loopback)), Log: quietLog(), HeartbeatStale: stale, Now: clk.Now})
	tenantID, err := testDB.Tenant(context.Background(), "worker test")
	if err != nil {
		t.Fatal(err)
	}
	x := &world{t: t, clock: clk, insp: asynq.NewInspectorFromRedisClient(rdb), d: d, runs: r, hooks: hooks,
		ctl: control.New(control.Options{Vault: v, Now: clk.Now}),
		w:   New(rdb, r, hooks, d, quietLog(), Config{Reconcile: runs.ReconcileOptions{Grace: grace}}), tenantID: tenantID,
		ctx: viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	x.in(func(ctx context.Context, c *ent.Client) error {
		env, err := c.Environment.Query().Where(environment.Name("development")).Only(ctx)
		if err == nil {
			x.envID = env.ID
		}
		return err
	})
	return x
}

// in runs fn in one transaction of the tenant as its owner.
func (x *world) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	err := store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error { return fn(ctx, ent.FromContext(ctx)) })
	if err != nil {
		x.t.Fatal(err)
	}
}

// startRun deploys a workflow of the given steps and starts a run of it.
func (x *world) startRun(stepList ...map[string]any) string {
	x.t.Helper()
	list := make([]any, len(stepList))
	for i, s := range stepList {
		list[i] = s
	}
	var id string
	x.in(func(ctx context.Context, c *ent.Client) error {
		wf, err := x.ctl.CreateWorkflow(ctx, "wf", "wf-"+testdb.RandHex(4), "")
		if err != nil {
			return err
		}
		v, err := x.ctl.CreateWorkflowVersion(ctx, wf.ID, map[string]any{"schemaVersion": 1, "steps": list})
		if err != nil {
			return err
		}
		if _, err := x.ctl.PublishWorkflowVersion(ctx, v.ID); err != nil {
			return err
		}
		if _, err := x.ctl.DeployWorkflowVersion(ctx, v.ID, x.envID); err != nil {
			return err
		}
		r, err := x.runs.StartRun(ctx, runs.StartRunInput{WorkflowID: wf.ID, EnvironmentID: x.envID})
		if err != nil {
			return err
		}
		id = r.ID
		return nil
	})
	return id
}

// queued lists the tenant's tasks in a queue, in every state, by task id.
// Other tests' tenants share the package's database, so the reconciler may
// send their due work too: it is left out.
func (x *world) queued(queue string) map[string]*asynq.TaskInfo {
	x.t.Helper()
	out := map[string]*asynq.TaskInfo{}
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		x.insp.ListPendingTasks, x.insp.ListScheduledTasks, x.insp.ListActiveTasks, x.insp.ListRetryTasks, x.insp.ListArchivedTasks,
	}
	for _, list := range lists {
		infos, err := list(queue, asynq.PageSize(1000))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return out
		}
		if err != nil {
			x.t.Fatal(err)
		}
		for _, info := range infos {
			if p, err := decode(asynq.NewTask(info.Type, info.Payload)); err == nil && p.TenantID == x.tenantID {
				out[info.ID] = info
			}
		}
	}
	return out
}

// ids returns a queue's task ids (see queued) with their states, sorted.
func (x *world) ids(queue string) []string {
	x.t.Helper()
	var out []string
	for id, info := range x.queued(queue) {
		out = append(out, id+" "+info.State.String())
	}
	sort.Strings(out)
	return out
}

// payload is the payload of the tenant's task id in queue; a missing
// task fails the test.
func (x *world) payload(queue, id string) payload {
	x.t.Helper()
	info, ok := x.queued(queue)[id]
	if !ok {
		x.t.Fatalf("no task %s in %s", id, queue)
	}
	p, err := decode(asynq.NewTask(info.Type, info.Payload))
	if err != nil {
		x.t.Fatal(err)
	}
	return p
}

// lose deletes the tenant's tasks from a queue: the queue lost them.
func (x *world) lose(queue string) {
	x.t.Helper()
	for id := range x.queued(queue) {
		if err := x.insp.DeleteTask(queue, id); err != nil {
			x.t.Fatal(err)
		}
	}
}

// reconcile runs the reconciler once.
func (x *world) reconcile() {
	x.t.Helper()
	if _, err := x.w.ReconcileOnce(context.Background()); err != nil {
		x.t.Fatalf("reconcile: %v", err)
	}
}

// drain takes the tenant's pending step tasks out of the queue and runs
// them, as a worker would, until none is left.
func (x *world) drain() {
	x.t.Helper()
	for range 20 {
		pending := 0
		for id, info := range x.queued(QueueSteps) {
			if info.State != asynq.TaskStatePending {
				continue
			}
			pending++
			p, err := decode(asynq.NewTask(info.Type, info.Payload))
			if err != nil {
				x.t.Fatal(err)
			}
			if err := x.insp.DeleteTask(QueueSteps, id); err != nil {
				x.t.Fatal(err)
			}
			if err := x.runs.ExecuteChain(context.Background(), p.TenantID, p.attempt()); err != nil {
				x.t.Fatalf("execute %s: %v", id, err)
			}
		}
		if pending == 0 {
			return
		}
	}
	x.t.Fatal("step tasks keep coming")
}

// step reads one step of a run.
func (x *world) step(runID, stepID string) *ent.StepRun {
	x.t.Helper()
	var sr *ent.StepRun
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		sr, err = c.StepRun.Query().Where(steprun.RunID(runID), steprun.StepID(stepID)).Only(ctx)
		return err
	})
	return sr
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (x *world) wantIDs(queue string, want ...string) {
	x.t.Helper()
	sort.Strings(want)
	if got := x.ids(queue); !equal(got, want) {
		x.t.Errorf("%s queue holds %v, want %v", queue, got, want)
	}
}

// httpStep calls url (never reached unless the test executes the step).
func httpStep(id, url string) map[string]any {
	return map[string]any{"id": id, "type": "http", "request": map[string]any{"method": "GET", "url": url}}
}

// TestReconcileResendsALostStep: a queued step whose task the queue lost
// is re-sent by every reconciliation while it is past due by more than the
// grace, once (a second send of a live task is rejected by its id), and no
// longer once it is not due (the run was cancelled).
func TestReconcileResendsALostStep(t *testing.T) {
	x := newWorld(t)
	runID := x.startRun(httpStep("call", "http://127.0.0.1:1/"))
	att := *x.step(runID, "call").CurrentAttemptID
	task := tasks.KindStep + ":" + att
	x.wantIDs(QueueSteps, task+" pending") // StartRun sent it
	x.lose(QueueSteps)

	x.reconcile() // not yet past the grace
	x.wantIDs(QueueSteps)

	x.clock.Advance(grace + time.Second)
	x.reconcile()
	x.wantIDs(QueueSteps, task+" pending")
	x.reconcile() // still due: the queue keeps the one task
	x.wantIDs(QueueSteps, task+" pending")
	x.lose(QueueSteps) // lost again: the next pass sends it again
	x.reconcile()
	x.wantIDs(QueueSteps, task+" pending")
	if p := x.payload(QueueSteps, task); p.RunID != runID || p.StepID != "call" || p.ID != att {
		t.Errorf("re-sent payload %+v", p)
	}

	x.in(func(ctx context.Context, _ *ent.Client) error { _, err := x.runs.CancelRun(ctx, runID); return err })
	x.lose(QueueSteps)
	x.clock.Advance(grace + time.Second)
	x.reconcile()
	x.wantIDs(QueueSteps) // a cancelled run's step is not due
}

// TestReconcileTakesOverASilentStep: a running step whose heartbeat is
// silent past the stale period gets a takeover task under an id of its own,
// beside the dead holder's task, which may still sit in the queue.
func TestReconcileTakesOverASilentStep(t *testing.T) {
	x := newWorld(t)
	called := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called <- struct{}{}
		<-r.Context().Done() // the worker dies mid-call
	}))
	t.Cleanup(srv.Close)
	runID := x.startRun(httpStep("call", srv.URL))
	att := *x.step(runID, "call").CurrentAttemptID
	task := tasks.KindStep + ":" + att
	x.wantIDs(QueueSteps, task+" pending")

	// A worker claims the step (outside the queue: its task stays) and
	// hangs in the call.
	ctx, die := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- x.runs.ExecuteChain(ctx, x.tenantID, runs.AttemptRef{RunID: runID, StepID: "call", ID: att})
	}()
	t.Cleanup(func() { die(); <-done })
	select {
	case <-called:
	case <-time.After(20 * time.Second):
		t.Fatal("the step was never called")
	}
	sr := x.step(runID, "call")
	if sr.Status != steprun.StatusRunning {
		t.Fatalf("step %s, want running", sr.Status)
	}

	x.clock.Advance(stale - time.Minute) // silent, but not for long enough
	x.reconcile()
	x.wantIDs(QueueSteps, task+" pending")

	x.clock.Advance(2 * time.Minute)
	x.reconcile()
	takeover := task + ":" + strconv.FormatInt(sr.UpdatedAt.UnixMilli(), 36)
	x.wantIDs(QueueSteps, task+" pending", takeover+" pending")
	if p := x.payload(QueueSteps, takeover); p.ID != att || p.RunID != runID || p.StepID != "call" {
		t.Errorf("takeover payload %+v", p)
	}
	x.reconcile() // the same silence: the same takeover, not a second one
	x.wantIDs(QueueSteps, task+" pending", takeover+" pending")
}

// approvalRun starts a run whose first step asks for approval (1h timeout)
// and runs it to the request; it returns the run and the request's id.
func (x *world) approvalRun() (string, string) {
	x.t.Helper()
	runID := x.startRun(
		map[string]any{"id": "gate", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": "1h"},
		map[string]any{"id": "after", "type": "transform", "needs": []any{"gate"}, "output": "'done'"},
	)
	x.drain()
	var aprID string
	x.in(func(ctx context.Context, c *ent.Client) error {
		a, err := c.ApprovalRequest.Query().Where(approvalrequest.RunID(runID)).Only(ctx)
		if err == nil {
			aprID = a.ID
		}
		return err
	})
	return runID, aprID
}

// TestReconcileExpiresApprovals: an approval past its expiry whose timeout
// task was lost gets it again; the handler then expires it.
func TestReconcileExpiresApprovals(t *testing.T) {
	x := newWorld(t)
	_, aprID := x.approvalRun()
	timeout := tasks.KindApprovalTimeout + ":" + aprID
	x.wantIDs(QueueTimers, timeout+" pending") // sent when requested
	x.lose(QueueTimers)

	x.clock.Advance(time.Hour - time.Second)
	x.reconcile()
	x.wantIDs(QueueTimers)

	x.clock.Advance(2 * time.Second)
	x.reconcile()
	x.wantIDs(QueueTimers, timeout+" pending")

	p, _ := json.Marshal(x.payload(QueueTimers, timeout))
	if err := x.w.handleApprovalTimeout(context.Background(), asynq.NewTask(tasks.KindApprovalTimeout, p)); err != nil {
		t.Fatal(err)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		a, err := c.ApprovalRequest.Get(ctx, aprID)
		if err == nil && a.Status != approvalrequest.StatusExpired {
			t.Errorf("approval %s after its timeout task, want expired", a.Status)
		}
		return err
	})
	x.lose(QueueTimers)
	x.reconcile()
	x.wantIDs(QueueTimers) // expired: no longer due
}

// TestReconcileResendsWebhookDeliveries: pending deliveries whose tasks
// were lost are re-sent once past due by more than the grace.
func TestReconcileResendsWebhookDeliveries(t *testing.T) {
	x := newWorld(t)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, _, err := x.hooks.CreateWebhookEndpoint(ctx, "http://127.0.0.1:9/hook", nil, "")
		return err
	})
	runID, _ := x.approvalRun()
	var want []string
	x.in(func(ctx context.Context, c *ent.Client) error {
		list, err := c.WebhookDelivery.Query().Where(webhookdelivery.RunID(runID), webhookdelivery.StatusEQ(webhookdelivery.StatusPending)).All(ctx)
		for _, d := range list {
			want = append(want, tasks.KindWebhook+":"+d.ID+":a0 pending")
		}
		return err
	})
	if len(want) < 2 { // run.started and approval.requested
		t.Fatalf("deliveries %v", want)
	}
	x.wantIDs(QueueWebhooks, want...) // sent after commit
	x.lose(QueueWebhooks)

	x.reconcile()
	x.wantIDs(QueueWebhooks)

	x.clock.Advance(grace + time.Second)
	x.reconcile()
	x.wantIDs(QueueWebhooks, want...)
}

// TestReconcileReplacesArchivedTasks: a task whose id is held by an
// archived asynq task (retries exhausted) is never re-sent by a plain
// dispatch; the reconciler's dispatch replaces the archived task.
func TestReconcileReplacesArchivedTasks(t *testing.T) {
	x := newWorld(t)
	runID := x.startRun(httpStep("call", "http://127.0.0.1:1/"))
	att := *x.step(runID, "call").CurrentAttemptID
	task := tasks.KindStep + ":" + att
	if err := x.insp.ArchiveTask(QueueSteps, task); err != nil {
		t.Fatal(err)
	}
	x.clock.Advance(grace + time.Second)
	due, err := x.runs.DueTasks(context.Background(), x.tenantID, runs.ReconcileOptions{Grace: grace})
	if err != nil || len(due) != 1 {
		t.Fatalf("due %+v, %v", due, err)
	}
	if err := x.d.Dispatch(context.Background(), due); err != nil {
		t.Fatal(err)
	}
	x.wantIDs(QueueSteps, task+" archived") // the id rejects the send

	x.reconcile()
	x.wantIDs(QueueSteps, task+" pending")
}

// TestQueueCollector: the queue gauges are the queues' sizes by state.
func TestQueueCollector(t *testing.T) {
	ctx := context.Background()
	rdb := testdb.Redis(t, "worker-test")
	d := NewDispatcher(asynq.NewClientFromRedisClient(rdb), nil)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	later := time.Now().Add(time.Hour)
	send := []tasks.Task{
		{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_1"},
		{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_2"},
		{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_3"},
		{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_4", At: later},
		{Kind: tasks.KindWebhook, TenantID: "ten_1", RunID: "run_1", ID: "dlv_1", Variant: "a0"},
		{Kind: tasks.KindApprovalTimeout, TenantID: "ten_1", RunID: "run_1", ID: "apr_1", At: later},
		{Kind: tasks.KindApprovalTimeout, TenantID: "ten_1", RunID: "run_1", ID: "apr_2", At: later},
	}
	if err := d.Dispatch(ctx, send); err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask(QueueSteps, "step.execute:att_3"); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(insp))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	ages := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetName() {
			case "sluice_queue_tasks":
				got[labels["queue"]+"/"+labels["state"]] = m.GetGauge().GetValue()
			case "sluice_queue_oldest_pending_seconds":
				ages[labels["queue"]] = m.GetGauge().GetValue() >= 0
			}
		}
	}
	want := map[string]float64{
		"steps/pending": 2, "steps/scheduled": 1, "steps/archived": 1, "steps/active": 0, "steps/retry": 0,
		"webhooks/pending": 1, "webhooks/scheduled": 0, "webhooks/archived": 0, "webhooks/active": 0, "webhooks/retry": 0,
		"timers/pending": 0, "timers/scheduled": 2, "timers/archived": 0, "timers/active": 0, "timers/retry": 0,
	}
	b1, _ := json.Marshal(got)
	b2, _ := json.Marshal(want)
	if string(b1) != string(b2) {
		t.Errorf("queue gauges %s, want %s", b1, b2)
	}
	if len(ages) != 3 || !ages[QueueSteps] || !ages[QueueWebhooks] || !ages[QueueTimers] {
		t.Errorf("oldest-pending ages %v, want one per queue", ages)
	}
}
