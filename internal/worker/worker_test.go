package worker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/webhook"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// A task's payload decodes to the attempt it names, version included.
func TestPayloadRoundTrip(t *testing.T) {
	task := tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", StepID: "stp_1", VersionID: "ver_1", ID: "att_1", CheckFirst: true}
	p, err := decode(asynq.NewTask(tasks.KindStep, encodePayload(task)))
	if err != nil {
		t.Fatal(err)
	}
	want := runs.AttemptRef{RunID: "run_1", StepID: "stp_1", VersionID: "ver_1", ID: "att_1", CheckFirst: true}
	if p.TenantID != "ten_1" || p.attempt() != want {
		t.Errorf("decoded %+v, attempt %+v", p, p.attempt())
	}
}

func TestDecode(t *testing.T) {
	p, err := decode(asynq.NewTask(tasks.KindStep, []byte(`{"v":1,"tenantID":"ten_1","runID":"run_1","stepID":"stp_1","versionID":"ver_1","batched":true,"id":"att_1"}`)))
	if err != nil {
		t.Fatal(err)
	}
	want := runs.AttemptRef{RunID: "run_1", StepID: "stp_1", VersionID: "ver_1", ID: "att_1", CheckFirst: true}
	if p.V != 1 || p.TenantID != "ten_1" || p.attempt() != want {
		t.Errorf("decoded %+v, attempt %+v", p, p.attempt())
	}
	// A task written before step ids were carried still decodes.
	p, err = decode(asynq.NewTask(tasks.KindStep, []byte(`{"v":1,"tenantID":"ten_1","runID":"run_1","id":"att_1"}`)))
	if err != nil || p.ID != "att_1" || p.StepID != "" || p.VersionID != "" || p.CheckFirst {
		t.Errorf("older payload: %+v, %v", p, err)
	}
	// A payload that cannot be read will never be: asynq must not retry it.
	w := &Worker{log: quietLog()} // no services: a handler that reached it would panic
	for name, h := range map[string]asynq.HandlerFunc{
		tasks.KindStep: w.handleStep, tasks.KindApprovalTimeout: w.handleApprovalTimeout, tasks.KindWebhook: w.handleWebhook,
	} {
		err := h(context.Background(), asynq.NewTask(name, []byte(`not json`)))
		if !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("%s with a bad payload returned %v, want SkipRetry", name, err)
		}
	}
}

// The encoding is a contract with tasks already queued by older processes.
func TestPayloadEncoding(t *testing.T) {
	b, err := json.Marshal(payload{V: 1, TenantID: "ten_1", RunID: "run_1", ID: "att_1"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"v":1,"tenantID":"ten_1","runID":"run_1","id":"att_1"}`; got != want {
		t.Errorf("payload = %s, want %s", got, want)
	}
	if tasks.KindStep != "step.execute" || tasks.KindApprovalTimeout != "approval.timeout" || tasks.KindWebhook != "webhook.deliver" {
		t.Error("task kinds changed: queued tasks of the old kinds would find no handler")
	}
}

func TestDispatch(t *testing.T) {
	ctx := context.Background()
	rdb := testdb.Redis(t, "worker-test")
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	d := NewDispatcher(client, rdb)
	later := time.Now().Add(time.Hour)

	cases := []struct {
		task  tasks.Task
		queue string
		id    string
		state asynq.TaskState
	}{
		{tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", StepID: "stp_1", ID: "att_1", CheckFirst: true}, QueueSteps, "step.execute:att_1", asynq.TaskStatePending},
		{tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", StepID: "stp_1", ID: "att_1", Variant: "takeover1"}, QueueSteps, "step.execute:att_1:takeover1", asynq.TaskStatePending},
		{tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", StepID: "stp_2", ID: "att_2", At: later}, QueueSteps, "step.execute:att_2", asynq.TaskStateScheduled},
		{tasks.Task{Kind: tasks.KindApprovalTimeout, TenantID: "ten_1", RunID: "run_1", ID: "apr_1", At: later}, QueueTimers, "approval.timeout:apr_1", asynq.TaskStateScheduled},
		{tasks.Task{Kind: tasks.KindWebhook, TenantID: "ten_1", RunID: "run_1", ID: "dlv_1", Variant: "2"}, QueueWebhooks, "webhook.deliver:dlv_1:2", asynq.TaskStatePending},
	}
	for _, c := range cases {
		if err := d.Dispatch(ctx, []tasks.Task{c.task}); err != nil {
			t.Fatalf("dispatch %s: %v", c.id, err)
		}
		// The same work sent again is no error and no second task.
		if err := d.Dispatch(ctx, []tasks.Task{c.task}); err != nil {
			t.Fatalf("dispatch %s again: %v", c.id, err)
		}
		info, err := insp.GetTaskInfo(c.queue, c.id)
		if err != nil {
			t.Fatalf("task %s in %s: %v", c.id, c.queue, err)
		}
		if info.Type != c.task.Kind || info.State != c.state || info.MaxRetry != 20 {
			t.Errorf("task %s: type %s state %v max retry %d", c.id, info.Type, info.State, info.MaxRetry)
		}
		p, err := decode(asynq.NewTask(info.Type, info.Payload))
		if err != nil || p.V != 1 || p.TenantID != c.task.TenantID || p.RunID != c.task.RunID || p.StepID != c.task.StepID || p.ID != c.task.ID || p.CheckFirst != c.task.CheckFirst {
			t.Errorf("task %s payload %+v, %v", c.id, p, err)
		}
	}
	count := func(queue string) int {
		q, err := insp.GetQueueInfo(queue)
		if err != nil {
			t.Fatal(err)
		}
		return q.Size
	}
	if n := count(QueueSteps); n != 3 {
		t.Errorf("%d step tasks, want 3", n)
	}
	if n := count(QueueTimers); n != 1 {
		t.Errorf("%d timer tasks, want 1", n)
	}
	if n := count(QueueWebhooks); n != 1 {
		t.Errorf("%d webhook tasks, want 1", n)
	}

	// A fan-out enqueues every task.
	var fan []tasks.Task
	for i := range 20 {
		fan = append(fan, tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_2", ID: fmt.Sprintf("fan_%d", i)})
	}
	if err := d.Dispatch(ctx, fan); err != nil {
		t.Fatal(err)
	}
	if n := count(QueueSteps); n != 23 {
		t.Errorf("%d step tasks after a fan-out of 20, want 23", n)
	}
}

// TestWakeUps: only a lone step task that is due now (and is no takeover)
// pushes a wake-up, once per dispatch, carrying the task's payload.
func TestWakeUps(t *testing.T) {
	ctx := context.Background()
	rdb := testdb.Redis(t, "worker-test")
	d := NewDispatcher(asynq.NewClientFromRedisClient(rdb), rdb)
	wakes := func() []payload {
		raw, err := rdb.LRange(ctx, wakeKey, 0, -1).Result()
		if err != nil {
			t.Fatal(err)
		}
		var out []payload
		for _, r := range raw {
			var p payload
			if err := json.Unmarshal([]byte(r), &p); err != nil {
				t.Fatalf("wake-up %q: %v", r, err)
			}
			out = append(out, p)
		}
		return out
	}
	noWake := [][]tasks.Task{
		{{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_later", At: time.Now().Add(time.Hour)}},
		{{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_takeover", Variant: "t1"}},
		{{Kind: tasks.KindApprovalTimeout, TenantID: "ten_1", RunID: "run_1", ID: "apr_1"}},
		{{Kind: tasks.KindWebhook, TenantID: "ten_1", RunID: "run_1", ID: "dlv_1"}},
		{{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_a"}, {Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_b"}},
	}
	for _, tasks := range noWake {
		if err := d.Dispatch(ctx, tasks); err != nil {
			t.Fatal(err)
		}
	}
	if w := wakes(); len(w) != 0 {
		t.Fatalf("wake-ups %+v for tasks that must not wake a worker", w)
	}
	lone := tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", StepID: "stp_1", ID: "att_now", CheckFirst: true}
	if err := d.Dispatch(ctx, []tasks.Task{lone}); err != nil {
		t.Fatal(err)
	}
	w := wakes()
	if len(w) != 1 || w[0] != (payload{V: 1, TenantID: "ten_1", RunID: "run_1", StepID: "stp_1", CheckFirst: true, ID: "att_now"}) {
		t.Fatalf("wake-ups %+v, want one for att_now", w)
	}
	// Without Redis for wake-ups the task is still enqueued.
	if err := NewDispatcher(asynq.NewClientFromRedisClient(rdb), nil).Dispatch(ctx, []tasks.Task{{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_nowake"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(QueueSteps, "step.execute:att_nowake"); err != nil {
		t.Errorf("task without wake-ups: %v", err)
	}
	if w := wakes(); len(w) != 1 {
		t.Errorf("%d wake-ups, want still 1", len(w))
	}
}

// runWakeLoop runs the wake loop until the wake list is empty, then stops it
// and returns once it has returned.
func runWakeLoop(t *testing.T, w *Worker, rdb *redis.Client, slots chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.wakeLoop(ctx, context.Background(), slots) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n, err := rdb.LLen(context.Background(), wakeKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the wake loop left %d wake-ups", n)
		}
		time.Sleep(10 * time.Millisecond) // polling for progress
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the wake loop did not stop")
	}
}

// TestWakeLoopLeavesWorkToTheQueue: a wake-up runs nothing unless this
// worker has a free slot and takes the step's task out of the queue; in
// every other case the task (if any) stays for asynq and the slot is free.
// The worker has no run state machine: running a step would panic.
func TestWakeLoopLeavesWorkToTheQueue(t *testing.T) {
	ctx := context.Background()
	rdb := testdb.Redis(t, "worker-test")
	d := NewDispatcher(asynq.NewClientFromRedisClient(rdb), rdb)
	w := New(rdb, nil, nil, d, quietLog(), Config{})
	insp := asynq.NewInspectorFromRedisClient(rdb)

	// Busy: every slot taken. The wake-up is dropped; the task stays queued.
	busy := tasks.Task{Kind: tasks.KindStep, TenantID: "ten_1", RunID: "run_1", ID: "att_busy"}
	if err := d.Dispatch(ctx, []tasks.Task{busy}); err != nil {
		t.Fatal(err)
	}
	slots := make(chan struct{}, 1)
	slots <- struct{}{}
	runWakeLoop(t, w, rdb, slots)
	if info, err := insp.GetTaskInfo(QueueSteps, "step.execute:att_busy"); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("busy worker: task %+v, %v; want it still pending", info, err)
	}

	// Free slot, but the task is gone (another worker took it) or the
	// wake-up is garbage: nothing runs and the slot is given back.
	slots = make(chan struct{}, 1)
	gone, _ := json.Marshal(payload{V: 1, TenantID: "ten_1", RunID: "run_1", ID: "att_gone"})
	if err := rdb.RPush(ctx, wakeKey, gone, "not json").Err(); err != nil {
		t.Fatal(err)
	}
	runWakeLoop(t, w, rdb, slots)
	if len(slots) != 0 {
		t.Errorf("%d slots still held", len(slots))
	}
	if info, err := insp.GetTaskInfo(QueueSteps, "step.execute:att_busy"); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("unrelated task: %+v, %v; want it still pending", info, err)
	}
}

// downServices are a real run state machine and webhook deliverer whose
// Postgres is unreachable (a closed port).
func downServices(t *testing.T, d *Dispatcher) (*runs.Service, *webhook.Service) {
	t.Helper()
	db, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/none?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c := store.NewClient(db)
	return runs.New(runs.Options{Client: c, Dispatcher: d, Log: quietLog()}),
		webhook.NewService(webhook.ServiceOptions{Client: c, Dispatcher: d, Log: quietLog()})
}

// TestHandlersRetryOutages: while Postgres is down a handler returns an
// error asynq retries (not SkipRetry): the work stays due.
func TestHandlersRetryOutages(t *testing.T) {
	r, wh := downServices(t, nil)
	w := &Worker{runs: r, webhooks: wh, log: quietLog()}
	b, _ := json.Marshal(payload{V: 1, TenantID: ids.New(ids.Tenant), RunID: ids.New(ids.Run), StepID: ids.New(ids.StepRun), ID: ids.New(ids.StepAttempt)})
	for name, h := range map[string]asynq.HandlerFunc{
		tasks.KindStep: w.handleStep, tasks.KindApprovalTimeout: w.handleApprovalTimeout, tasks.KindWebhook: w.handleWebhook,
	} {
		err := h(context.Background(), asynq.NewTask(name, b))
		if err == nil || errors.Is(err, asynq.SkipRetry) || !store.Unavailable(err) {
			t.Errorf("%s with Postgres down returned %v, want a retryable outage error", name, err)
		}
	}
}

// TestWakeLoopTakesTheTask: with a free slot, the worker that pops a
// wake-up takes the step's task out of the queue (so asynq never runs it
// too), runs the attempt, and gives the slot back when it ends.
func TestWakeLoopTakesTheTask(t *testing.T) {
	ctx := context.Background()
	rdb := testdb.Redis(t, "worker-test")
	d := NewDispatcher(asynq.NewClientFromRedisClient(rdb), rdb)
	r, wh := downServices(t, d)
	w := New(rdb, r, wh, d, quietLog(), Config{})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	task := tasks.Task{Kind: tasks.KindStep, TenantID: ids.New(ids.Tenant), RunID: ids.New(ids.Run), StepID: ids.New(ids.StepRun), ID: ids.New(ids.StepAttempt)}
	if err := d.Dispatch(ctx, []tasks.Task{task}); err != nil {
		t.Fatal(err)
	}
	slots := make(chan struct{}, 1)
	runWakeLoop(t, w, rdb, slots)
	if _, err := insp.GetTaskInfo(QueueSteps, tasks.KindStep+":"+task.ID); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("the woken step's task is still queued (%v)", err)
	}
	// The attempt fails (Postgres is down) and releases its slot.
	deadline := time.Now().Add(30 * time.Second)
	for len(slots) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the woken attempt never released its slot")
		}
		time.Sleep(10 * time.Millisecond) // polling for progress
	}
}
