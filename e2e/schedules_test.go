package e2e

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"testing"
	"time"
)

const (
	mCreateSchedule = `mutation($in: CreateScheduleInput!) { createSchedule(input: $in) { id cron every offset timezone overlap catchupWindow jitter paused nextSlotAt nextFireAt createdBy } }`
	qSchedule       = `query($id: ID!) { node(id: $id) { ... on Schedule { id paused note nextSlotAt nextFireAt nextFireTimes(n: 3)
		recentActions(first: 200) { source outcome scheduledAt runID message run { id status createdBy idempotencyKey scheduleID } } } } }`
	mTriggerSchedule  = `mutation($id: ID!) { triggerSchedule(id: $id) { source outcome runID message } }`
	mPauseSchedule    = `mutation($id: ID!, $n: String) { pauseSchedule(id: $id, note: $n) { id paused note } }`
	mBackfillSchedule = `mutation($id: ID!, $f: Time!, $t: Time!, $d: Boolean) { backfillSchedule(id: $id, from: $f, to: $t, dryRun: $d) { dryRun slots actions { outcome scheduledAt runID } } }`
)

func scheduleActions(t *testing.T, c *client, id string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, a := range get(c.ok(qSchedule, map[string]any{"id": id}), "node.recentActions").([]any) {
		out = append(out, a.(map[string]any))
	}
	return out
}

func countOutcomes(actions []map[string]any) map[string]int {
	n := map[string]int{}
	for _, a := range actions {
		n[str(a, "outcome")]++
	}
	return n
}

// scheduleRunsBySlot counts, from the database, the runs a schedule
// started per idempotency key (one key per slot).
func scheduleRunsBySlot(t *testing.T, scheduleID string) map[string]int {
	t.Helper()
	rows, err := ownerDB(t).Query(`SELECT idempotency_key, count(*) FROM runs WHERE created_by = $1 GROUP BY 1`, "schedule:"+scheduleID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var k sql.NullString
		var n int
		if err := rows.Scan(&k, &n); err != nil {
			t.Fatal(err)
		}
		out[k.String] = n
	}
	return out
}

// Four workers (the suite's two and the stack's two) and a 1s interval:
// each slot starts exactly one run, through a Redis wipe.
func TestSchedulesOneRunPerSlot(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "sched")
	st := newStack(t, 2, "SLUICE_SCHEDULE_INTERVAL=200ms")
	c := newClient(t, 0, token(t, f.tenantID, "owner")).on(st.server)
	sc := c.ok(mCreateSchedule, map[string]any{"in": map[string]any{"workflowID": f.workflowID, "environmentID": f.envID,
		"every": "1s", "input": map[string]any{"name": "tick"}, "overlap": "ALLOW_ALL"}})
	id := str(sc, "createSchedule.id")
	if str(sc, "createSchedule.createdBy") == "" || str(sc, "createSchedule.nextFireAt") == "" {
		t.Fatalf("schedule: %v", sc)
	}
	started := func(n int) {
		eventually(t, 60*time.Second, func() (bool, string) {
			got := countOutcomes(scheduleActions(t, c, id))["STARTED"]
			return got >= n, fmt.Sprintf("%d runs started, want %d", got, n)
		})
	}
	started(4)
	// Redis loses everything: the schedule's state is in Postgres.
	rdb := st.redis()
	if err := rdb.FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	started(10)
	c.ok(mPauseSchedule, map[string]any{"id": id, "n": "enough"})

	actions := scheduleActions(t, c, id)
	var slots []time.Time
	for _, a := range actions {
		if str(a, "outcome") != "STARTED" || str(a, "source") != "SLOT" {
			t.Fatalf("action %v: want only STARTED slots", a)
		}
		if str(a, "run.createdBy") != "schedule:"+id || str(a, "run.scheduleID") != id || !strings.HasPrefix(str(a, "run.idempotencyKey"), "sched:"+id+":") {
			t.Fatalf("run of %v", a)
		}
		ts, err := time.Parse(time.RFC3339Nano, str(a, "scheduledAt"))
		if err != nil {
			t.Fatal(err)
		}
		slots = append(slots, ts)
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
	for i := 1; i < len(slots); i++ {
		if d := slots[i].Sub(slots[i-1]); d != time.Second {
			t.Fatalf("slots %s then %s: want every slot once, 1s apart", slots[i-1], slots[i])
		}
	}
	byKey := scheduleRunsBySlot(t, id)
	if len(byKey) != len(slots) {
		t.Fatalf("%d slots recorded, runs under %d keys", len(slots), len(byKey))
	}
	for k, n := range byKey {
		if n != 1 {
			t.Fatalf("slot key %s started %d runs", k, n)
		}
	}
	for _, a := range actions {
		waitRun(t, c, str(a, "runID"), 60*time.Second, "succeeded")
	}
	t.Logf("%d slots, one run each", len(slots))
}

// scheduleLockKey is the ticker's advisory lock (store.SingletonKey("schedules")).
func scheduleLockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("sluice:schedules"))
	return int64(h.Sum64())
}

// The ticker is down (its singleton lock held, the stack's workers
// stopped, Redis wiped) for five hourly slots; with a catch-up window of
// 2h the two most recent run on restart (ALLOW_ALL: both; SKIP: the latest,
// the other recorded SKIPPED_OVERLAP) and the three older are MISSED. The
// outage is written into Postgres by moving the schedules' position back
// five slots, as a ticker that stopped five hours ago would have left it.
func TestSchedulesOutageCatchup(t *testing.T) {
	f := newFixture(t, "schedout")
	st := newStack(t, 2)
	c := newClient(t, 0, token(t, f.tenantID, "owner")).on(st.server)
	ctx := context.Background()
	conn, err := ownerDB(t).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", scheduleLockKey()); err != nil {
		t.Fatal(err)
	}
	locked := true
	defer func() {
		if locked {
			conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", scheduleLockKey())
		}
	}()
	// Slots on the hour plus an offset that puts the next one 30 minutes
	// away: 30m, 1h30m, 2h30m, 3h30m and 4h30m late after the move.
	now := time.Now().UTC()
	offset := now.Add(30*time.Minute).Sub(now.Truncate(time.Hour)) % time.Hour
	offset = offset.Truncate(time.Second)
	mk := func(overlap string) string {
		return str(c.ok(mCreateSchedule, map[string]any{"in": map[string]any{"workflowID": f.workflowID, "environmentID": f.envID,
			"every": "1h", "offset": offset.String(), "catchupWindow": "2h", "overlap": overlap, "input": map[string]any{"name": overlap}}}), "createSchedule.id")
	}
	all, skip := mk("ALLOW_ALL"), mk("SKIP")
	for _, w := range st.workers {
		if err := w.halt(); err != nil {
			t.Fatal(err)
		}
	}
	st.workers = nil
	rdb := st.redis()
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rdb.Close()
	var next time.Time
	if err := conn.QueryRowContext(ctx, `SELECT next_slot_at FROM schedules WHERE id = $1`, all).Scan(&next); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, `UPDATE schedules SET next_slot_at = next_slot_at - interval '5 hours',
		next_fire_at = next_fire_at - interval '5 hours' WHERE id = ANY($1)`, []string{all, skip}); err != nil {
		t.Fatal(err)
	}
	// Nothing acted while the ticker was down.
	if n := len(scheduleActions(t, c, all)) + len(scheduleActions(t, c, skip)); n != 0 {
		t.Fatalf("%d actions while the ticker was down", n)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", scheduleLockKey()); err != nil {
		t.Fatal(err)
	}
	locked = false
	for range 2 {
		w, err := st.startWorker()
		if err != nil {
			t.Fatal(err)
		}
		st.workers = append(st.workers, w)
	}
	check := func(id string, want map[string]int, startedSlots ...time.Time) {
		var actions []map[string]any
		eventually(t, 60*time.Second, func() (bool, string) {
			actions = scheduleActions(t, c, id)
			got := countOutcomes(actions)
			for k, v := range want {
				if got[k] != v {
					return false, fmt.Sprintf("outcomes %v, want %v", got, want)
				}
			}
			return len(actions) == 5, fmt.Sprintf("%d actions: %v", len(actions), actions)
		})
		var got []string
		for _, a := range actions {
			if str(a, "outcome") == "STARTED" {
				got = append(got, str(a, "scheduledAt"))
				waitRun(t, c, str(a, "runID"), 60*time.Second, "succeeded")
			}
			if str(a, "outcome") == "MISSED" {
				ts, _ := time.Parse(time.RFC3339Nano, str(a, "scheduledAt"))
				if next.Sub(ts) < 3*time.Hour {
					t.Errorf("slot %s, %s before the next, recorded MISSED", ts, next.Sub(ts))
				}
			}
		}
		sort.Strings(got)
		var want2 []string
		for _, s := range startedSlots {
			want2 = append(want2, s.UTC().Format(time.RFC3339Nano))
		}
		if strings.Join(got, ",") != strings.Join(want2, ",") {
			t.Errorf("started slots %v, want %v", got, want2)
		}
		if n := len(scheduleRunsBySlot(t, id)); n != len(startedSlots) {
			t.Errorf("%d runs, want %d", n, len(startedSlots))
		}
		pos := c.ok(qSchedule, map[string]any{"id": id})
		if at, _ := time.Parse(time.RFC3339Nano, str(pos, "node.nextSlotAt")); !at.Equal(next) {
			t.Errorf("next slot %s, want %s again", at, next)
		}
	}
	check(all, map[string]int{"STARTED": 2, "MISSED": 3}, next.Add(-2*time.Hour), next.Add(-time.Hour))
	check(skip, map[string]int{"STARTED": 1, "SKIPPED_OVERLAP": 1, "MISSED": 3}, next.Add(-time.Hour))
}

// An approval holds the schedule's first run: under SKIP the next slots
// and a trigger are recorded SKIPPED_OVERLAP and start nothing.
func TestSchedulesOverlapSkip(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "schedskip")
	def := map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}},
	}}
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "held", "s": "held"}), "createWorkflow.id")
	v := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v})
	f.owner.ok(mDeploy, map[string]any{"v": v, "e": f.envID})
	id := str(f.owner.ok(mCreateSchedule, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": f.envID,
		"cron": "* * * * * *", "timezone": "Europe/Berlin"}}), "createSchedule.id")
	var actions []map[string]any
	eventually(t, 60*time.Second, func() (bool, string) {
		actions = scheduleActions(t, f.owner, id)
		n := countOutcomes(actions)
		return n["SKIPPED_OVERLAP"] >= 2, fmt.Sprintf("outcomes %v", n)
	})
	trig := f.owner.ok(mTriggerSchedule, map[string]any{"id": id})
	if str(trig, "triggerSchedule.outcome") != "SKIPPED_OVERLAP" || str(trig, "triggerSchedule.source") != "TRIGGER" {
		t.Fatalf("trigger: %v", trig)
	}
	f.owner.ok(mPauseSchedule, map[string]any{"id": id})
	actions = scheduleActions(t, f.owner, id)
	n := countOutcomes(actions)
	if n["STARTED"] != 1 || len(scheduleRunsBySlot(t, id)) != 1 {
		t.Fatalf("outcomes %v, runs %v: want one run", n, scheduleRunsBySlot(t, id))
	}
	var runID string
	for _, a := range actions {
		if str(a, "outcome") == "STARTED" {
			runID = str(a, "runID")
		}
	}
	// A skip names the unfinished run; on a busy machine the ticker may also
	// come late to two slots at once, and records the earlier one as a
	// catch-up skip. The manual trigger's skip always names the run.
	named := 0
	for _, a := range actions {
		if str(a, "outcome") != "SKIPPED_OVERLAP" {
			continue
		}
		switch msg := str(a, "message"); {
		case strings.Contains(msg, runID):
			named++
		case str(a, "source") == "SLOT" && strings.HasPrefix(msg, "caught up late together with later slots"):
		default:
			t.Fatalf("skipped %v: want the unfinished run named", a)
		}
	}
	if named == 0 {
		t.Fatalf("no skip names the unfinished run %s: %v", runID, actions)
	}
}

// A backfill's dry run lists the slots and writes nothing; the real one
// starts one run per slot, and again starts none.
func TestSchedulesBackfill(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "schedfill")
	id := str(f.owner.ok(mCreateSchedule, map[string]any{"in": map[string]any{"workflowID": f.workflowID, "environmentID": f.envID,
		"cron": "0 * * * *", "input": map[string]any{"name": "past"}}}), "createSchedule.id")
	now := time.Now().UTC()
	from, to := now.Truncate(time.Hour).Add(-3*time.Hour), now
	dry := f.owner.ok(mBackfillSchedule, map[string]any{"id": id, "f": from.Format(time.RFC3339), "t": to.Format(time.RFC3339Nano), "d": true})
	slots, _ := get(dry, "backfillSchedule.slots").([]any)
	if len(slots) != 4 || get(dry, "backfillSchedule.dryRun") != true || len(get(dry, "backfillSchedule.actions").([]any)) != 0 {
		t.Fatalf("dry run: %v", dry)
	}
	if n := len(scheduleActions(t, f.owner, id)); n != 0 || len(scheduleRunsBySlot(t, id)) != 0 {
		t.Fatalf("a dry run wrote %d actions", n)
	}
	real := f.owner.ok(mBackfillSchedule, map[string]any{"id": id, "f": from.Format(time.RFC3339), "t": to.Format(time.RFC3339Nano)})
	acts, _ := get(real, "backfillSchedule.actions").([]any)
	if len(acts) != 4 {
		t.Fatalf("backfill: %v", real)
	}
	f.owner.ok(mBackfillSchedule, map[string]any{"id": id, "f": from.Format(time.RFC3339), "t": to.Format(time.RFC3339Nano)})
	runs := scheduleRunsBySlot(t, id)
	if len(runs) != 4 {
		t.Fatalf("runs by slot %v: want 4, one each", runs)
	}
	for k, n := range runs {
		if n != 1 {
			t.Fatalf("slot %s: %d runs", k, n)
		}
	}
	// Bounded: an interval of 1s over two hours is 7,200 slots.
	id2 := str(f.owner.ok(mCreateSchedule, map[string]any{"in": map[string]any{"workflowID": f.workflowID, "environmentID": f.envID,
		"every": "1s", "paused": true}}), "createSchedule.id")
	r := f.owner.fail("VALIDATION", mBackfillSchedule, map[string]any{"id": id2, "f": now.Add(-2 * time.Hour).Format(time.RFC3339), "t": now.Format(time.RFC3339), "d": true})
	if !hasProblemAt(r, "to") {
		t.Fatalf("want the path to: %s", r.Raw)
	}
}

func TestSchedulesBadInputAndIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "schedbad")
	strict := map[string]any{"schemaVersion": 1,
		"input": map[string]any{"type": "object", "required": []any{"n"}, "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{map[string]any{"id": "a", "type": "transform", "output": "input.n"}}}
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "strict", "s": "strict"}), "createWorkflow.id")
	v := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": strict}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v})
	f.owner.ok(mDeploy, map[string]any{"v": v, "e": f.envID})
	base := func(mod func(m map[string]any)) map[string]any {
		m := map[string]any{"workflowID": wf, "environmentID": f.envID, "cron": "0 9 * * *", "input": map[string]any{"n": 1}}
		mod(m)
		return map[string]any{"in": m}
	}
	cases := []struct {
		name string
		vars map[string]any
		path string
	}{
		{"invalid cron", base(func(m map[string]any) { m["cron"] = "61 * * * *" }), "input.cron"},
		{"neither cron nor every", base(func(m map[string]any) { delete(m, "cron") }), "input.cron"},
		{"both", base(func(m map[string]any) { m["every"] = "1m" }), "input.every"},
		{"every under 1s", base(func(m map[string]any) { delete(m, "cron"); m["every"] = "500ms" }), "input.every"},
		{"unknown time zone", base(func(m map[string]any) { m["timezone"] = "Europe/Atlantis" }), "input.timezone"},
		{"negative catchupWindow", base(func(m map[string]any) { m["catchupWindow"] = "-1m" }), "input.catchupWindow"},
		{"endAt before startAt", base(func(m map[string]any) {
			m["startAt"] = "2027-01-02T00:00:00Z"
			m["endAt"] = "2027-01-01T00:00:00Z"
		}), "input.endAt"},
		{"input refused by the schema", base(func(m map[string]any) { m["input"] = map[string]any{"n": "one"} }), "input.input.n"},
		{"input missing a required field", base(func(m map[string]any) { m["input"] = map[string]any{} }), "input.input.n"},
		{"unknown workflow", base(func(m map[string]any) { m["workflowID"] = "wf_01nothere" }), "input.workflowID"},
	}
	for _, tc := range cases {
		r := f.owner.fail("VALIDATION", mCreateSchedule, tc.vars)
		if !hasProblemAt(r, tc.path) {
			t.Errorf("%s: want path %s, got %s", tc.name, tc.path, r.Raw)
		}
	}
	if n := len(edges(f.owner.ok(`{ schedules(first: 10) { edges { node { id } } } }`, nil), "schedules")); n != 0 {
		t.Fatalf("%d schedules written by bad input", n)
	}
	var audits int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action LIKE 'schedule.%'`, f.tenantID).Scan(&audits); err != nil {
		t.Fatal(err)
	}
	if audits != 0 {
		t.Fatalf("%d audit entries for refused input", audits)
	}
	// A viewer reads, never writes.
	viewerC := newClient(t, 0, token(t, f.tenantID, "viewer"))
	viewerC.fail("FORBIDDEN", mCreateSchedule, base(func(map[string]any) {}))

	id := str(f.owner.ok(mCreateSchedule, base(func(m map[string]any) { m["timezone"] = "Europe/Berlin" })), "createSchedule.id")
	times, _ := get(f.owner.ok(qSchedule, map[string]any{"id": id}), "node.nextFireTimes").([]any)
	if len(times) != 3 {
		t.Fatalf("nextFireTimes: %v", times)
	}
	r := f.owner.fail("VALIDATION", `mutation($id: ID!) { updateSchedule(id: $id, input: {catchupWindow: "-5s"}) { id } }`, map[string]any{"id": id})
	if !hasProblemAt(r, "input.catchupWindow") {
		t.Fatalf("update: %s", r.Raw)
	}
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'schedule.create'`, f.tenantID).Scan(&audits); err != nil || audits != 1 {
		t.Fatalf("audit entries for schedule.create: %d (%v)", audits, err)
	}

	// A key scoped to the production environment does not reach the
	// development environment's schedule, nor create one there.
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "prod-editor", roles: [EDITOR], environmentID: $e}) { token } }`, map[string]any{"e": f.prodEnvID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	if n := get(scoped.ok(qSchedule, map[string]any{"id": id}), "node"); n != nil {
		t.Fatalf("a key of another environment read %v", n)
	}
	scoped.fail("NOT_FOUND", mTriggerSchedule, map[string]any{"id": id})
	if r := scoped.do(mCreateSchedule, base(func(map[string]any) {})); r.Code() == "" {
		t.Fatalf("a production key created a development schedule: %s", r.Raw)
	}

	// Another tenant: the schedule reads like one that never existed.
	other := newFixture(t, "schedother")
	if n := get(other.owner.ok(qSchedule, map[string]any{"id": id}), "node"); n != nil {
		t.Fatalf("another tenant read %v", n)
	}
	if n := len(edges(other.owner.ok(`{ schedules(first: 10) { edges { node { id } } } }`, nil), "schedules")); n != 0 {
		t.Fatalf("another tenant lists %d schedules", n)
	}
	other.owner.fail("NOT_FOUND", mTriggerSchedule, map[string]any{"id": id})
	other.owner.fail("NOT_FOUND", mPauseSchedule, map[string]any{"id": id})
	other.owner.fail("NOT_FOUND", `mutation($id: ID!) { deleteSchedule(id: $id) { id } }`, map[string]any{"id": id})
	other.owner.fail("NOT_FOUND", mBackfillSchedule, map[string]any{"id": id, "f": "2026-01-01T00:00:00Z", "t": "2026-01-02T00:00:00Z", "d": true})
	if len(scheduleActions(t, f.owner, id)) != 0 {
		t.Fatal("another tenant's calls acted")
	}
	f.owner.ok(`mutation($id: ID!) { deleteSchedule(id: $id) { id } }`, map[string]any{"id": id})
	if n := get(f.owner.ok(qSchedule, map[string]any{"id": id}), "node"); n != nil {
		t.Fatalf("deleted schedule still reads %v", n)
	}
}
