package retention_test

// The purge tests run against a real Postgres (internal/testdb) on the app
// role's pool, so RLS and the app role's grants apply. Runs are written as
// rows (finished, with payloads in every place the purge clears) rather
// than executed: the purge only reads what is stored. One injected clock
// decides what is due.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/retention"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "retentiontest", &testDB))
}

type h struct {
	t      *testing.T
	clock  *testdb.Clock
	svc    *retention.Service
	ctx    context.Context
	tenant string
	envID  string
	wfID   string
	verID  string
}

func newH(t *testing.T, batch int) *h {
	t.Helper()
	return newHWith(t, batch, nil)
}

func newHWith(t *testing.T, batch int, purged *prometheus.CounterVec) *h {
	t.Helper()
	tenantID, err := testDB.Tenant(context.Background(), "retention test")
	if err != nil {
		t.Fatal(err)
	}
	clk := testdb.NewClock(time.Now())
	x := &h{t: t, clock: clk, tenant: tenantID,
		svc: retention.New(retention.Options{Client: testDB.App, Day: time.Hour, Batch: batch, Now: clk.Now, Purged: purged}),
		ctx: viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	ctl := control.New(control.Options{Vault: vault.New(secrets.DevKeyRing()), Now: clk.Now})
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
		x.wfID, x.verID = wf.ID, ver.ID
		return nil
	})
	return x
}

func (x *h) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	if err := store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error { return fn(ctx, ent.FromContext(ctx)) }); err != nil {
		x.t.Fatal(err)
	}
}

// finishedRun writes a run that finished `ago` before the clock, with a
// step output, an attempt's recorded call and an event carrying data.
func (x *h) finishedRun(ago time.Duration, status run.Status) string {
	var id string
	x.in(func(ctx context.Context, c *ent.Client) error {
		fin := x.clock.Now().Add(-ago)
		r, err := c.Run.Create().SetWorkflowID(x.wfID).SetVersionID(x.verID).SetEnvironmentID(x.envID).
			SetStatus(status).SetInput(map[string]any{"secret": "customer data"}).SetInputHash("h").
			SetOutput(json.RawMessage(`{"answer":"private"}`)).SetCreatedBy("user_owner").SetCostMicroUsd(1234).
			SetErrorClass("transient").SetStartedAt(fin.Add(-time.Second)).SetFinishedAt(fin).Save(ctx)
		if err != nil {
			return err
		}
		sr, err := c.StepRun.Create().SetRunID(r.ID).SetStepID("a").SetType("transform").
			SetStatus(steprun.StatusSucceeded).SetOutput(json.RawMessage(`{"x":"private"}`)).Save(ctx)
		if err != nil {
			return err
		}
		if _, err := c.StepAttempt.Create().SetRunID(r.ID).SetStepRunID(sr.ID).SetStepID("a").SetNumber(1).
			SetScheduledAt(fin).SetCalls([]map[string]any{{"request": map[string]any{"body": "prompt"}}}).Save(ctx); err != nil {
			return err
		}
		if _, err := c.RunEvent.Create().SetRunID(r.ID).SetSeq(1).SetType("run.succeeded").
			SetData(map[string]any{"output": "private"}).SetAt(fin).Save(ctx); err != nil {
			return err
		}
		id = r.ID
		return nil
	})
	return id
}

func (x *h) get(id string) *ent.Run {
	var r *ent.Run
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		r, err = c.Run.Get(ctx, id)
		return err
	})
	return r
}

func (x *h) purged(id string) bool { return x.get(id).PayloadPurgedAt != nil }

func (x *h) setPolicy(in retention.Input) {
	x.t.Helper()
	x.in(func(ctx context.Context, c *ent.Client) error { _, err := x.svc.Set(ctx, in); return err })
}

func days(n int) *int { return &n }

func TestPurgeInBatchesKeepsTombstones(t *testing.T) {
	purged := retention.NewPurgedCounter(prometheus.NewRegistry())
	x := newHWith(t, 3, purged)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(1)}})
	var old []string
	for range 7 {
		old = append(old, x.finishedRun(2*time.Hour, run.StatusSucceeded))
	}
	young := x.finishedRun(30*time.Minute, run.StatusFailed)

	var preview *retention.Preview
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		preview, err = x.svc.Preview(ctx, retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(1)}})
		return err
	})
	got, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil {
		t.Fatal(err)
	}
	if got.PayloadRuns != 7 || got.Batches != 3 {
		t.Fatalf("purged %d runs in %d batches, want 7 in 3 (batches of 3)", got.PayloadRuns, got.Batches)
	}
	if n := counter(t, purged, retention.KindPayloads); n != 7 {
		t.Fatalf("sluice_retention_purged_total{kind=payloads} = %v, want 7", n)
	}
	if n := counter(t, purged, retention.KindBytes); n != float64(got.PayloadBytes) {
		t.Fatalf("sluice_retention_purged_total{kind=payload_bytes} = %v, want %d", n, got.PayloadBytes)
	}
	if preview.PayloadRuns != got.PayloadRuns || preview.PayloadBytes != got.PayloadBytes || got.PayloadBytes <= 0 {
		t.Fatalf("preview %d runs %d bytes; purge %d runs %d bytes", preview.PayloadRuns, preview.PayloadBytes, got.PayloadRuns, got.PayloadBytes)
	}
	for _, id := range old {
		r := x.get(id)
		if r.PayloadPurgedAt == nil || r.PayloadPurgedBy == nil || *r.PayloadPurgedBy != retention.Subject {
			t.Fatalf("run %s not purged: %+v", id, r)
		}
		// The tombstone: status, timings, cost, error class stay.
		if r.Status != run.StatusSucceeded || r.CostMicroUsd != 1234 || r.FinishedAt == nil || r.StartedAt == nil ||
			r.ErrorClass == nil || *r.ErrorClass != "transient" || r.VersionID != x.verID {
			t.Fatalf("tombstone lost metadata: %+v", r)
		}
		if len(r.Input) != 0 || len(r.Output) != 0 {
			t.Fatalf("payloads left on %s: input %v output %s", id, r.Input, r.Output)
		}
		x.in(func(ctx context.Context, c *ent.Client) error {
			sr := c.StepRun.Query().Where(steprun.RunID(id)).OnlyX(ctx)
			ev := c.RunEvent.Query().Where(runevent.RunID(id)).OnlyX(ctx)
			at := c.StepAttempt.Query().Where().AllX(ctx)
			for _, a := range at {
				if a.RunID == id && a.Calls != nil {
					t.Errorf("attempt %s kept its calls", a.ID)
				}
			}
			if sr.Output != nil || ev.Data != nil || ev.Type != "run.succeeded" {
				t.Errorf("step output %s / event %s %v left", sr.Output, ev.Type, ev.Data)
			}
			return nil
		})
	}
	if x.purged(young) {
		t.Fatal("a run finished 30 minutes ago was purged under payloadDays 1 (1h days)")
	}
	// A second pass finds nothing: nothing is purged twice.
	again, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil || again.PayloadRuns != 0 {
		t.Fatalf("second pass: %+v %v", again, err)
	}
	var passes []*ent.RetentionPass
	x.in(func(ctx context.Context, c *ent.Client) (err error) { passes, err = x.svc.Passes(ctx, 10); return err })
	if len(passes) != 1 || passes[0].PayloadRuns != 7 || passes[0].Batches != 3 || passes[0].FinishedAt == nil {
		t.Fatalf("passes recorded: %+v", passes)
	}
}

func TestPurgeExclusions(t *testing.T) {
	x := newH(t, 100)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(0)}})
	plain := x.finishedRun(time.Minute, run.StatusSucceeded)
	held := x.finishedRun(time.Minute, run.StatusSucceeded)
	var open string
	x.in(func(ctx context.Context, c *ent.Client) error {
		r, err := c.Run.Create().SetWorkflowID(x.wfID).SetVersionID(x.verID).SetEnvironmentID(x.envID).
			SetStatus(run.StatusRunning).SetInput(map[string]any{"k": "v"}).SetInputHash("h").SetCreatedBy("u").Save(ctx)
		open = r.ID
		return err
	})
	x.in(func(ctx context.Context, c *ent.Client) error { _, err := x.svc.Hold(ctx, held, "case 42"); return err })
	// A workflow override keeps this workflow's runs 5 days.
	overridden := x.finishedRun(time.Minute, run.StatusSucceeded)
	x.setPolicy(retention.Input{Scope: retention.ScopeWorkflow, TargetID: x.wfID, Days: retention.Days{Payload: days(5)}})
	if _, err := x.svc.PurgeTenant(context.Background(), x.tenant); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{plain, held, open, overridden} {
		if x.purged(id) {
			t.Errorf("run %s purged while kept", id)
		}
	}
	x.setPolicy(retention.Input{Scope: retention.ScopeWorkflow, TargetID: x.wfID}) // override removed
	if _, err := x.svc.PurgeTenant(context.Background(), x.tenant); err != nil {
		t.Fatal(err)
	}
	if !x.purged(plain) || !x.purged(overridden) {
		t.Fatal("finished runs kept after the override went")
	}
	if x.purged(held) || x.purged(open) {
		t.Fatal("a held or open run was purged")
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		st, err := x.svc.StatusOf(ctx, c, x.get(held))
		if err != nil || st.Reason != retention.ReasonLegalHold {
			t.Errorf("held run status %+v %v", st, err)
		}
		st, err = x.svc.StatusOf(ctx, c, x.get(open))
		if err != nil || st.Reason != retention.ReasonOpen {
			t.Errorf("open run status %+v %v", st, err)
		}
		st, err = x.svc.StatusOf(ctx, c, x.get(plain))
		if err != nil || st.Reason != retention.ReasonPurged || st.Until == nil {
			t.Errorf("purged run status %+v %v", st, err)
		}
		return nil
	})
	// Released, the held run goes at the next pass.
	x.in(func(ctx context.Context, c *ent.Client) error { _, err := x.svc.ReleaseHold(ctx, held); return err })
	if _, err := x.svc.PurgeTenant(context.Background(), x.tenant); err != nil {
		t.Fatal(err)
	}
	if !x.purged(held) {
		t.Fatal("a released run was not purged")
	}
}

func TestTombstonesDeletedAfterRunDays(t *testing.T) {
	x := newH(t, 2)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(0), Run: days(2)}})
	oldRun := x.finishedRun(3*time.Hour, run.StatusSucceeded)
	newRun := x.finishedRun(time.Hour, run.StatusSucceeded)
	got, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil {
		t.Fatal(err)
	}
	if got.PayloadRuns != 2 || got.RunsDeleted != 1 {
		t.Fatalf("pass %+v, want 2 payloads purged and 1 tombstone deleted", got)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n := c.Run.Query().Where(run.ID(oldRun)).CountX(ctx); n != 0 {
			t.Errorf("run past runDays kept")
		}
		if n := c.StepRun.Query().Where(steprun.RunID(oldRun)).CountX(ctx); n != 0 {
			t.Errorf("its steps kept")
		}
		if n := c.RunEvent.Query().Where(runevent.RunID(oldRun)).CountX(ctx); n != 0 {
			t.Errorf("its events kept")
		}
		return nil
	})
	if !x.purged(newRun) {
		t.Fatal("young run not purged (payloadDays 0)")
	}
}

func TestPolicyValidation(t *testing.T) {
	x := newH(t, 10)
	cases := []struct {
		in   retention.Input
		path string
	}{
		{retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(-1)}}, "input.payloadDays"},
		{retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Run: days(0)}}, "input.runDays"},
		{retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(10), Run: days(5)}}, "input.payloadDays"},
		{retention.Input{Scope: retention.ScopeEnvironment, TargetID: "env_missing", Days: retention.Days{Payload: days(1)}}, "input.targetID"},
		{retention.Input{Scope: retention.ScopeWorkflow, TargetID: x.wfID, Days: retention.Days{Audit: days(10)}}, "input.auditDays"},
		{retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(4000)}}, "input.payloadDays"},
	}
	for _, tc := range cases {
		err := store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error { _, err := x.svc.Set(ctx, tc.in); return err })
		e, ok := errs.As(err)
		if !ok || len(e.Problems) == 0 || e.Problems[0].Path != tc.path {
			t.Errorf("%+v: got %v, want a problem at %s", tc.in, err, tc.path)
		}
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n := c.RetentionPolicy.Query().CountX(ctx); n != 0 {
			t.Errorf("refused input wrote %d policies", n)
		}
		return nil
	})
}

// Audit entries go only after auditDays, through the SECURITY DEFINER
// function (the app role cannot delete them itself).
func TestAuditPurgedAfterAuditDays(t *testing.T) {
	x := newH(t, 2)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Audit: days(2)}})
	var before int
	x.in(func(ctx context.Context, c *ent.Client) error { before = c.AuditLog.Query().CountX(ctx); return nil })
	if before == 0 {
		t.Fatal("no audit entries to purge")
	}
	// One day and a half later: none is past auditDays.
	x.clock.Advance(90 * time.Minute)
	got, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil || got.AuditDeleted != 0 {
		t.Fatalf("purge within auditDays: %+v %v", got, err)
	}
	x.clock.Advance(time.Hour)
	got, err = x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil || got.AuditDeleted != int64(before) {
		t.Fatalf("purge past auditDays: %+v %v, want %d entries deleted", got, err, before)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		// What is left: the pass's own retention.purge entry.
		list := c.AuditLog.Query().AllX(ctx)
		if len(list) != 1 || list[0].Action != "retention.purge" {
			t.Errorf("audit after the purge: %d entries", len(list))
		}
		return nil
	})
}

func counter(t *testing.T, c *prometheus.CounterVec, kind string) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.WithLabelValues(kind).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// OAuth authorization states go a policy day after they expire, used or
// not; one that expired less than a day ago, or has not expired, stays.
func TestExpiredOAuthStatesPurged(t *testing.T) {
	x := newH(t, 2)
	now := x.clock.Now()
	x.in(func(ctx context.Context, c *ent.Client) error {
		cred, err := c.Credential.Create().SetEnvironmentID(x.envID).SetName("crm-" + testdb.RandHex(3)).
			SetType("oauth2").SetCurrentVersion(1).SetFingerprint("f").SetCreatedBy("user_owner").Save(ctx)
		if err != nil {
			return err
		}
		for i, exp := range []time.Duration{-5 * time.Hour, -3 * time.Hour, -2 * time.Hour, -30 * time.Minute, 10 * time.Minute} {
			st := c.OAuthState.Create().SetCredentialID(cred.ID).SetStateHash(fmt.Sprintf("h%d-%s", i, testdb.RandHex(4))).
				SetRedirectAfter("/").SetRedirectURI("http://127.0.0.1/cb").SetCreatedBy("user_owner").SetExpiresAt(now.Add(exp))
			if i == 0 {
				st.SetUsedAt(now.Add(exp - time.Minute))
			}
			if _, err := st.Save(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	// Day is an hour here: the three that expired over an hour ago go (in
	// two batches of 2), the other two stay.
	if _, err := x.svc.PurgeTenant(context.Background(), x.tenant); err != nil {
		t.Fatal(err)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		left := c.OAuthState.Query().AllX(ctx)
		if len(left) != 2 {
			t.Fatalf("%d states left, want 2", len(left))
		}
		for _, st := range left {
			if st.ExpiresAt.Before(now.Add(-time.Hour)) {
				t.Errorf("a state expired at %s (over a day before %s) was kept", st.ExpiresAt, now)
			}
		}
		return nil
	})
}

// planOf is testdb.Plan with statistics on runs, as autovacuum keeps
// them.
func planOf(ctx context.Context, types, query string, literals ...string) (string, error) {
	if _, err := testDB.Owner.ExecContext(context.Background(), `ANALYZE runs`); err != nil {
		return "", err
	}
	return testdb.Plan(ctx, types, query, 0, literals...)
}

// shortest is the tenant's shortest payload and run periods
// (Resolver.Shortest), which bound the purge's scans.
func (x *h) shortest(ctx context.Context, c *ent.Client) (payload, run int) {
	x.t.Helper()
	r, err := retention.NewResolver(ctx, c, x.tenant)
	if err != nil {
		x.t.Fatal(err)
	}
	return r.Shortest()
}

// daysAgo is, as a SQL literal, the test clock's now less days (a day is
// an hour here).
func (x *h) daysAgo(days int) string {
	return "'" + x.clock.Now().Add(-time.Duration(days)*time.Hour).Format(time.RFC3339Nano) + "'"
}

// scanned is how many entries the plan's scan of index read, or -1 when
// the plan does not scan it with a bound on finished_at as an index
// condition. A bitmap scan's count also has the entries of row versions
// that are no longer visible and not yet vacuumed (a tombstone deleted a
// moment before, a run's earlier version); a plain index scan's has only
// the rows it returned.
func scanned(plan, index string) int {
	m := regexp.MustCompile(`(?:Index Scan using ` + index + ` on runs r|Bitmap Index Scan on ` + index + `) \(actual rows=(\d+)[^\n]*\n(?:[^\n]*\n)*?\s*Index Cond: [^\n]*finished_at <= `).FindStringSubmatch(plan)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// A run's cutoff is its own (workflow, then environment, then tenant
// policy), and a pass reads only the runs old enough for the shortest
// period any of the tenant's policies gives: a workflow's override shorter
// than the tenant's period still purges that workflow's runs, and the
// tenant's young runs are not read at all.
func TestPurgeReadsOnlyRunsOldEnoughForAPolicy(t *testing.T) {
	x := newH(t, 100)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(30), Run: days(60)}})
	x.setPolicy(retention.Input{Scope: retention.ScopeWorkflow, TargetID: x.wfID, Days: retention.Days{Payload: days(2)}})
	due := x.finishedRun(3*time.Hour, run.StatusSucceeded) // Day is an hour here
	young := x.finishedRun(time.Hour, run.StatusSucceeded)
	for range 20 {
		x.finishedRun(time.Minute, run.StatusSucceeded)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		payload, _ := x.shortest(ctx, c)
		if payload != 2 {
			t.Errorf("shortest payload period %d days, want the workflow's 2", payload)
		}
		plan, err := planOf(ctx, "text, timestamptz, float8, bigint, bigint, timestamptz, int", retention.PayloadBatchSQL,
			"'"+x.tenant+"'", x.daysAgo(0), "3600", "30", "60", x.daysAgo(payload), "100")
		if err != nil {
			return err
		}
		// Reading any of the 21 young runs would read them all.
		if n := scanned(plan, "run_retention_payload"); n < 1 || n > 20 {
			t.Errorf("the selection read %d runs for the 1 due, of 22 finished (-1: not by run_retention_payload up to a bound):\n%s", n, plan)
		}
		return nil
	})
	got, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil {
		t.Fatal(err)
	}
	if got.PayloadRuns != 1 || !x.purged(due) || x.purged(young) {
		t.Fatalf("pass %+v: due run purged %v, young run purged %v; want only the run past the workflow's 2 days",
			got, x.purged(due), x.purged(young))
	}
}

// The same for tombstones: a workflow's shorter runDays deletes its old
// tombstones, and the deletion reads no tombstone too young for every
// policy.
func TestTombstoneDeletionReadsOnlyRunsOldEnough(t *testing.T) {
	x := newH(t, 100)
	x.setPolicy(retention.Input{Scope: retention.ScopeTenant, Days: retention.Days{Payload: days(0), Run: days(30)}})
	x.setPolicy(retention.Input{Scope: retention.ScopeWorkflow, TargetID: x.wfID, Days: retention.Days{Run: days(2)}})
	old := x.finishedRun(3*time.Hour, run.StatusSucceeded)
	young := x.finishedRun(time.Hour, run.StatusSucceeded)
	for range 20 {
		x.finishedRun(time.Minute, run.StatusSucceeded)
	}
	got, err := x.svc.PurgeTenant(context.Background(), x.tenant)
	if err != nil {
		t.Fatal(err)
	}
	if got.PayloadRuns != 22 || got.RunsDeleted != 1 || !x.purged(young) {
		t.Fatalf("pass %+v, want 22 payloads purged and the 1 tombstone past the workflow's 2 days deleted", got)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n := c.Run.Query().Where(run.IDIn(old, young)).CountX(ctx); n != 1 {
			t.Errorf("%d of the old and young runs left, want the young one's tombstone", n)
		}
		// Nothing is due now: the deletion reads none of the 21 tombstones.
		_, runDays := x.shortest(ctx, c)
		if runDays != 2 {
			t.Errorf("shortest run period %d days, want the workflow's 2", runDays)
		}
		plan, err := planOf(ctx, "text, timestamptz, float8, bigint, int, timestamptz", retention.TombstoneBatchSQL,
			"'"+x.tenant+"'", x.daysAgo(0), "3600", "30", "100", x.daysAgo(runDays))
		if err != nil {
			return err
		}
		// Reading any of the 21 young tombstones would read them all (the
		// old one, deleted by the pass, may still have its entry).
		if n := scanned(plan, "run_retention_tombstone"); n < 0 || n > 1 {
			t.Errorf("the deletion read %d tombstones, none due (-1: not by run_retention_tombstone up to a bound):\n%s", n, plan)
		}
		return nil
	})
}
