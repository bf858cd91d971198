package schedules_test

// The ticker tests run the real run state machine and schedules service
// against a real Postgres (internal/testdb) on the app role's pool, with
// one injected clock that the tests move. Only the queue is replaced (runs
// stay queued: unfinished, which is what the overlap policies look at).

import (
	"context"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/schedule"
	"github.com/sluicehq/sluice/ent/scheduleaction"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/schedules"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "schedtest", &testDB))
}

type dispatcher struct{}

func (dispatcher) Dispatch(context.Context, []tasks.Task) error { return nil }

type h struct {
	t     *testing.T
	clock *testdb.Clock
	runs  *runs.Service
	sched *schedules.Service
	ctx   context.Context
	envID string
	wfID  string
}

func newH(t *testing.T, start time.Time) *h {
	t.Helper()
	tenantID, err := testDB.Tenant(context.Background(), "schedules test")
	if err != nil {
		t.Fatal(err)
	}
	clk := testdb.NewClock(start)
	v := vault.New(secrets.DevKeyRing())
	e := runs.New(runs.Options{Vault: v, Client: testDB.App, Dispatcher: dispatcher{},
		Executor: steps.NewExecutor(egress.NewClient(egress.Config{})), Now: clk.Now})
	x := &h{t: t, clock: clk, runs: e, sched: x0(e, clk),
		ctx: viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	ctl := control.New(control.Options{Vault: v, Now: clk.Now})
	x.in(func(ctx context.Context, c *ent.Client) error {
		env, err := c.Environment.Query().Where(environment.Name("development")).Only(ctx)
		if err != nil {
			return err
		}
		x.envID = env.ID
		wf, err := ctl.CreateWorkflow(ctx, "wf", "wf-"+testdb.RandHex(4), "")
		if err != nil {
			return err
		}
		ver, err := ctl.CreateWorkflowVersion(ctx, wf.ID, map[string]any{"schemaVersion": 1,
			"steps": []any{map[string]any{"id": "a", "type": "transform", "output": "1"}}})
		if err != nil {
			return err
		}
		if _, err := ctl.PublishWorkflowVersion(ctx, ver.ID); err != nil {
			return err
		}
		_, err = ctl.DeployWorkflowVersion(ctx, ver.ID, x.envID)
		x.wfID = wf.ID
		return err
	})
	return x
}

// x0 is one worker's schedules service on the shared clock.
func x0(e *runs.Service, clk *testdb.Clock) *schedules.Service {
	return schedules.New(schedules.Options{Client: testDB.App, Runs: e, Now: clk.Now})
}

func (x *h) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	if err := store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error { return fn(ctx, ent.FromContext(ctx)) }); err != nil {
		x.t.Fatal(err)
	}
}

func (x *h) create(in schedules.Input) *ent.Schedule {
	x.t.Helper()
	in.WorkflowID, in.EnvironmentID = x.wfID, x.envID
	var sc *ent.Schedule
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		sc, err = x.sched.Create(ctx, in)
		return err
	})
	return sc
}

func (x *h) tick(s *schedules.Service) {
	x.t.Helper()
	if _, err := s.Tick(context.Background()); err != nil {
		x.t.Fatal(err)
	}
}

// actions returns a schedule's actions, oldest slot first.
func (x *h) actions(id string) []*ent.ScheduleAction {
	x.t.Helper()
	var out []*ent.ScheduleAction
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.ScheduleAction.Query().Where(scheduleaction.ScheduleID(id)).Order(ent.Asc(scheduleaction.FieldScheduledAt)).All(ctx)
		return err
	})
	return out
}

func (x *h) runsByKey(id string) map[string]int {
	x.t.Helper()
	out := map[string]int{}
	x.in(func(ctx context.Context, c *ent.Client) error {
		list, err := c.Run.Query().Where(run.CreatedBy(schedules.Subject(id))).All(ctx)
		for _, r := range list {
			out[*r.IdempotencyKey]++
		}
		return err
	})
	return out
}

func outcomes(list []*ent.ScheduleAction) []string {
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = string(a.Outcome)
	}
	return out
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// Three tickers (three workers' services, no singleton lock) pass at once
// after every second of a moving clock: each of 30 slots starts exactly
// one run.
func TestConcurrentTickersStartOneRunPerSlot(t *testing.T) {
	x := newH(t, time.Date(2026, 3, 29, 0, 59, 50, 0, time.UTC))
	sc := x.create(schedules.Input{Cron: ptr("* * * * * *"), Timezone: ptr("Europe/Berlin"), Overlap: ptr(schedule.OverlapAllowAll)})
	workers := []*schedules.Service{x0(x.runs, x.clock), x0(x.runs, x.clock), x0(x.runs, x.clock)}
	for range 30 {
		x.clock.Advance(time.Second)
		var wg sync.WaitGroup
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				x.tick(w)
			}()
		}
		wg.Wait()
	}
	acts := x.actions(sc.ID)
	if len(acts) != 30 {
		t.Fatalf("%d actions, want 30", len(acts))
	}
	byKey := x.runsByKey(sc.ID)
	if len(byKey) != 30 {
		t.Fatalf("runs under %d keys, want 30", len(byKey))
	}
	var slots []time.Time
	for _, a := range acts {
		if a.Outcome != scheduleaction.OutcomeStarted || byKey[schedules.IdempotencyKey(sc.ID, a.ScheduledAt)] != 1 {
			t.Fatalf("slot %s: %s, %d runs", a.ScheduledAt, a.Outcome, byKey[schedules.IdempotencyKey(sc.ID, a.ScheduledAt)])
		}
		slots = append(slots, a.ScheduledAt)
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
	for i := 1; i < len(slots); i++ {
		if slots[i].Sub(slots[i-1]) != time.Second {
			t.Fatalf("slots %s then %s", slots[i-1], slots[i])
		}
	}
}

// The ticker is away for five minutely slots; a 2m catch-up window covers
// the two latest: ALLOW_ALL runs both, SKIP the latest only, and the three
// older are MISSED.
func TestCatchupAfterAnOutage(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	all := x.create(schedules.Input{Every: ptr("1m"), CatchupWindow: ptr("2m"), Overlap: ptr(schedule.OverlapAllowAll)})
	skip := x.create(schedules.Input{Every: ptr("1m"), CatchupWindow: ptr("2m")})
	x.clock.Advance(5*time.Minute + 30*time.Second) // slots 12:01 to 12:05 passed, 4m30s to 30s ago
	x.tick(x.sched)
	equal(t, outcomes(x.actions(all.ID)), []string{"MISSED", "MISSED", "MISSED", "STARTED", "STARTED"})
	equal(t, outcomes(x.actions(skip.ID)), []string{"MISSED", "MISSED", "MISSED", "SKIPPED_OVERLAP", "STARTED"})
	if n := len(x.runsByKey(all.ID)); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
	if n := len(x.runsByKey(skip.ID)); n != 1 {
		t.Fatalf("%d runs, want 1", n)
	}
	// Nothing more is due until 12:06.
	x.tick(x.sched)
	if n := len(x.actions(all.ID)); n != 5 {
		t.Fatalf("%d actions after a pass with nothing due", n)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		sc, err := c.Schedule.Get(ctx, all.ID)
		if err == nil && !sc.NextSlotAt.Equal(time.Date(2026, 6, 1, 12, 6, 0, 0, time.UTC)) {
			t.Errorf("next slot %s", sc.NextSlotAt)
		}
		return err
	})
}

// BUFFER_ONE: while the first run is unfinished the next slot waits and a
// third is skipped; when the first ends the waiting one starts.
// CANCEL_OTHER: the next slot cancels the unfinished run and starts.
func TestOverlapBufferOneAndCancelOther(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	buf := x.create(schedules.Input{Every: ptr("1m"), Overlap: ptr(schedule.OverlapBufferOne)})
	cancel := x.create(schedules.Input{Every: ptr("1m"), Overlap: ptr(schedule.OverlapCancelOther)})
	for range 3 {
		x.clock.Advance(time.Minute)
		x.tick(x.sched)
	}
	acts := x.actions(buf.ID)
	equal(t, outcomes(acts), []string{"STARTED", "BUFFERED", "SKIPPED_OVERLAP"})
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.runs.CancelRun(ctx, *acts[0].RunID)
		return err
	})
	x.tick(x.sched)
	acts = x.actions(buf.ID)
	equal(t, outcomes(acts), []string{"STARTED", "STARTED", "SKIPPED_OVERLAP"})
	if !acts[1].ScheduledAt.Equal(time.Date(2026, 6, 1, 12, 2, 0, 0, time.UTC)) || acts[1].RunID == nil {
		t.Fatalf("buffered slot: %+v", acts[1])
	}

	acts = x.actions(cancel.ID)
	equal(t, outcomes(acts), []string{"STARTED", "STARTED", "STARTED"})
	x.in(func(ctx context.Context, c *ent.Client) error {
		for i, a := range acts {
			r, err := c.Run.Get(ctx, *a.RunID)
			if err != nil {
				return err
			}
			want := run.StatusCancelled
			if i == len(acts)-1 {
				want = run.StatusQueued
			}
			if r.Status != want {
				t.Errorf("run of slot %d: %s, want %s", i, r.Status, want)
			}
		}
		return nil
	})
}

// Paused, a schedule acts on nothing; resumed, it starts from the first
// slot after now (the paused slots are not caught up). A trigger runs now.
func TestPauseResumeAndTrigger(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	sc := x.create(schedules.Input{Every: ptr("1m"), Overlap: ptr(schedule.OverlapAllowAll)})
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.sched.Pause(ctx, sc.ID, ptr("maintenance"))
		return err
	})
	x.clock.Advance(10 * time.Minute)
	x.tick(x.sched)
	if n := len(x.actions(sc.ID)); n != 0 {
		t.Fatalf("a paused schedule acted %d times", n)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		got, err := x.sched.Resume(ctx, sc.ID)
		if err == nil && !got.NextSlotAt.Equal(time.Date(2026, 6, 1, 12, 11, 0, 0, time.UTC)) {
			t.Errorf("resumed at %s", got.NextSlotAt)
		}
		return err
	})
	x.in(func(ctx context.Context, _ *ent.Client) error {
		a, err := x.sched.Trigger(ctx, sc.ID)
		if err == nil && (a.Outcome != scheduleaction.OutcomeStarted || a.Source != scheduleaction.SourceTrigger) {
			t.Errorf("trigger: %+v", a)
		}
		return err
	})
	x.clock.Advance(time.Minute)
	x.tick(x.sched)
	equal(t, outcomes(x.actions(sc.ID)), []string{"STARTED", "STARTED"})
}

// A jittered slot fires at the slot plus its deterministic jitter, not
// before; nextFireTimes says when.
func TestJitteredSlotFiresAtItsJitter(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	sc := x.create(schedules.Input{Every: ptr("1m"), Jitter: ptr("30s")})
	slot := time.Date(2026, 6, 1, 12, 1, 0, 0, time.UTC)
	fire := slot.Add(schedules.Jitter(sc.ID, slot, 30*time.Second))
	if !sc.NextFireAt.Equal(fire) {
		t.Fatalf("next fire %s, want %s", sc.NextFireAt, fire)
	}
	times, err := schedules.NextFireTimes(sc, 2)
	if err != nil || len(times) != 2 || !times[0].Equal(fire) {
		t.Fatalf("nextFireTimes %v (%v), want %s first", times, err, fire)
	}
	x.clock.Advance(fire.Sub(x.clock.Now()) - time.Millisecond)
	x.tick(x.sched)
	if n := len(x.actions(sc.ID)); n != 0 {
		t.Fatalf("%d actions a millisecond before the jittered fire time", n)
	}
	x.clock.Advance(time.Millisecond)
	x.tick(x.sched)
	acts := x.actions(sc.ID)
	equal(t, outcomes(acts), []string{"STARTED"})
	if !acts[0].ScheduledAt.Equal(slot) {
		t.Fatalf("slot %s, want %s (the key names the slot, not the fire time)", acts[0].ScheduledAt, slot)
	}
}

// A slot whose run the state machine refuses (the input no longer fits
// the version deployed since) is recorded FAILED with why, and the
// schedule goes on.
func TestRefusedRunIsRecordedFailed(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	sc := x.create(schedules.Input{Every: ptr("1m"), Input: map[string]any{"n": "text"}})
	ctl := control.New(control.Options{Vault: vault.New(secrets.DevKeyRing()), Now: x.clock.Now})
	x.in(func(ctx context.Context, _ *ent.Client) error {
		ver, err := ctl.CreateWorkflowVersion(ctx, x.wfID, map[string]any{"schemaVersion": 1,
			"input": map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
			"steps": []any{map[string]any{"id": "a", "type": "transform", "output": "1"}}})
		if err != nil {
			return err
		}
		if _, err := ctl.PublishWorkflowVersion(ctx, ver.ID); err != nil {
			return err
		}
		_, err = ctl.DeployWorkflowVersion(ctx, ver.ID, x.envID)
		return err
	})
	x.clock.Advance(time.Minute)
	x.tick(x.sched)
	acts := x.actions(sc.ID)
	equal(t, outcomes(acts), []string{"FAILED"})
	if acts[0].Message == nil || acts[0].RunID != nil {
		t.Fatalf("failed action: %+v", acts[0])
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		got, err := c.Schedule.Get(ctx, sc.ID)
		if err == nil && !got.NextSlotAt.Equal(time.Date(2026, 6, 1, 12, 2, 0, 0, time.UTC)) {
			t.Errorf("next slot %s: the schedule did not go on", got.NextSlotAt)
		}
		return err
	})
}

// One pass over 200 schedules due at once starts 200 runs; the figure
// (per slot) is logged for the README.
func TestTickerPassOverManyDueSchedules(t *testing.T) {
	x := newH(t, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC))
	const n = 200
	for range n {
		x.create(schedules.Input{Every: ptr("1m")})
	}
	x.clock.Advance(time.Minute)
	start := time.Now()
	acted, err := x.sched.Tick(context.Background())
	took := time.Since(start)
	// Tick visits every tenant of the test database: other tests' schedules
	// may be due on this clock too, so acted is at least n.
	if err != nil || acted < n {
		t.Fatalf("acted on %d slots (%v), want at least %d", acted, err, n)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		got, err := c.Run.Query().Where(run.CreatedByHasPrefix("schedule:")).Count(ctx)
		if err == nil && got != n {
			t.Errorf("%d runs, want %d", got, n)
		}
		return err
	})
	t.Logf("one pass: %d due slots in %s, %s per slot", acted, took.Round(time.Millisecond), (took / time.Duration(acted)).Round(10*time.Microsecond))
}
