package sla_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/slaspec"
)

// finish starts n runs of wf and marks them finished now with status (and
// class for failures), as the state machine would have: the window
// objectives read only runs' status, class, cost and finished_at.
func (x *h) finish(wf string, n int, status, class string) {
	x.t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = x.start(wf).ID
	}
	var cls any
	if class != "" {
		cls = class
	}
	_, err := testDB.Owner.ExecContext(context.Background(),
		`UPDATE runs SET status = $1, error_class = $2, finished_at = $3 WHERE id = ANY($4)`, status, cls, x.clock.Now(), ids)
	if err != nil {
		x.t.Fatal(err)
	}
}

func (x *h) evaluate() sla.WindowReport {
	x.t.Helper()
	rep, err := x.sla.EvaluateWindows(context.Background())
	if err != nil {
		x.t.Fatal(err)
	}
	return rep
}

func TestMinSuccessRateOpensOneIncidentAndResolvesWhenItHolds(t *testing.T) {
	x := newH(t)
	x.endpoint()
	wf := x.deploy(delayDef("1h"))
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{MinSuccessRate: &slaspec.SuccessRate{
		Common: slaspec.Common{Severity: slaspec.Warning}, Rate: 0.9, Window: "10m", MinRuns: 20}}})

	// 10 runs, 4 failed: too few for a verdict.
	x.finish(wf, 6, "succeeded", "")
	x.finish(wf, 4, "failed", "transient")
	x.evaluate()
	if n := len(x.incidents()); n != 0 {
		t.Fatalf("%d incidents with 10 runs, want none", n)
	}
	// 30 runs, 12 failed (transient): one incident, however many
	// evaluations see it.
	x.finish(wf, 12, "succeeded", "")
	x.finish(wf, 8, "failed", "transient")
	// Permanent failures are left out by default.
	x.finish(wf, 5, "failed", "permanent")
	x.evaluate()
	x.evaluate()
	list := x.incidents()
	if len(list) != 1 || list[0].Status != incident.StatusTriggered || list[0].PerRun || list[0].Objective != slaspec.MinSuccessRate {
		t.Fatalf("incidents %+v", list)
	}
	if runs := list[0].Details["runs"]; runs != float64(30) {
		t.Errorf("details %v: want 30 runs counted (permanent failures left out)", list[0].Details)
	}
	if n := x.deliveries(string(eventtype.SLABreached)); n != 1 {
		t.Errorf("%d sla.breached deliveries, want 1", n)
	}
	// The window slides past the failures; 30 successes: the objective
	// holds, and after two evaluations in a row the incident resolves.
	x.clock.Advance(11 * time.Minute)
	x.finish(wf, 30, "succeeded", "")
	x.evaluate()
	if got := x.incidents()[0]; got.Status != incident.StatusTriggered {
		t.Fatalf("resolved after one healthy evaluation: %+v", got)
	}
	x.evaluate()
	got := x.incidents()[0]
	if got.Status != incident.StatusResolved || got.ResolvedBy == nil || *got.ResolvedBy != "sluice" {
		t.Fatalf("not resolved after two healthy evaluations: %+v", got)
	}
	if n := x.deliveries(string(eventtype.IncidentResolved)); n != 1 {
		t.Errorf("%d incident.resolved deliveries, want 1", n)
	}
}

func TestMaxCostPerWindow(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("1h"))
	x.policy(sla.PolicyInput{EnvironmentID: &x.envID, Objectives: slaspec.Objectives{MaxCostPerWindow: &slaspec.WindowCost{
		Common: slaspec.Common{Severity: slaspec.Error}, MicroUSD: 1000, Window: "1h"}}})
	x.finish(wf, 3, "succeeded", "")
	if _, err := testDB.Owner.ExecContext(context.Background(), `UPDATE runs SET cost_micro_usd = 400 WHERE tenant_id = $1`, x.tenantID); err != nil {
		t.Fatal(err)
	}
	x.evaluate()
	list := x.incidents()
	if len(list) != 1 || list[0].Objective != slaspec.MaxCostPerWindow || list[0].Details["costMicroUSD"] != float64(1200) {
		t.Fatalf("incidents %+v", list)
	}
}

func TestMaxCostPerRunIsJudgedWhenTheRunFinished(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("1h"))
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxCostPerRun: &slaspec.Cost{Common: slaspec.Common{Severity: slaspec.Error}, MicroUSD: 100}}})
	r := x.start(wf)
	if r.SLAMaxCostMicroUsd == nil || *r.SLAMaxCostMicroUsd != 100 {
		t.Fatalf("max cost %v", r.SLAMaxCostMicroUsd)
	}
	if _, err := testDB.Owner.ExecContext(context.Background(), `UPDATE runs SET status = 'succeeded', finished_at = $2, cost_micro_usd = 250 WHERE id = $1`, r.ID, x.clock.Now()); err != nil {
		t.Fatal(err)
	}
	x.sweep()
	x.sweep()
	list := x.incidents()
	if len(list) != 1 || list[0].Objective != slaspec.MaxCostPerRun || list[0].Count != 1 {
		t.Fatalf("incidents %+v", list)
	}
}

func TestAQueuedRunPastItsQueueDelayAndAnApprovalLeftOpen(t *testing.T) {
	x := newH(t)
	// A run whose first step is an approval waits for a person: the
	// approval is open at once.
	wf := x.deploy(map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "ok", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}},
	}})
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxApprovalWait: dur("1m", slaspec.Warning)}})
	r := x.start(wf)
	x.clock.Advance(30 * time.Second)
	x.sweep()
	if n := len(x.incidents()); n != 0 {
		t.Fatalf("%d incidents before the wait passed", n)
	}
	x.clock.Advance(time.Minute)
	x.sweep()
	x.sweep()
	list := x.incidents()
	if len(list) != 1 || list[0].Objective != slaspec.MaxApprovalWait || list[0].SampleRunIds[0] != r.ID || list[0].Count != 1 {
		t.Fatalf("incidents %+v", list)
	}
}

func TestCompleteByJudgesEachInstantOnce(t *testing.T) {
	x := newH(t)
	x.endpoint()
	wf := x.deploy(delayDef("1h"))
	// The clock 10s past a minute: the policy (stamped with the wall
	// clock) is older than the next instant.
	now := x.clock.Now()
	x.clock.Advance(now.Truncate(time.Minute).Add(time.Minute + 10*time.Second).Sub(now))
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{CompleteBy: &slaspec.Deadline{
		Common: slaspec.Common{Severity: slaspec.Critical}, Cron: "* * * * *", TimeZone: "Europe/Paris"}}})
	x.start(wf) // still waiting at the next instant
	x.evaluate()
	if n := len(x.incidents()); n != 0 {
		t.Fatalf("%d incidents before the instant", n)
	}
	x.clock.Advance(time.Minute)
	x.evaluate()
	x.evaluate()
	list := x.incidents()
	if len(list) != 1 || list[0].Objective != slaspec.CompleteBy || list[0].Count != 1 || list[0].Details["runs"] != float64(1) {
		t.Fatalf("incidents %+v", list)
	}
	if n := x.deliveries(string(eventtype.SLABreached)); n != 1 {
		t.Errorf("%d sla.breached deliveries, want 1", n)
	}
	// The next minute has no run (requireRun is off): met, resolved.
	x.clock.Advance(time.Minute)
	x.evaluate()
	if got := x.incidents()[0]; got.Status != incident.StatusResolved {
		t.Errorf("after a met instant: %+v", got)
	}
}

func TestAQueuedRunPastItsQueueDelay(t *testing.T) {
	x := newH(t)
	// An http step starts queued; the test's queue delivers nothing, so
	// the run stays queued.
	wf := x.deploy(map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "call", "type": "http",
		"request": map[string]any{"method": "GET", "url": "http://127.0.0.1:9/x"}}}})
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxQueueDelay: dur("10s", slaspec.Warning), MaxDuration: dur("1h", slaspec.Error)}})
	r := x.start(wf)
	if r.SLAQueueDeadlineAt == nil || r.Status != "queued" {
		t.Fatalf("run %+v", r)
	}
	x.clock.Advance(11 * time.Second)
	x.sweep()
	x.sweep()
	list := x.incidents()
	if len(list) != 1 || list[0].Objective != slaspec.MaxQueueDelay || list[0].Count != 1 {
		t.Fatalf("incidents %+v", list)
	}
	// The run's next check is its maxDuration deadline.
	x.in(func(ctx context.Context, c *ent.Client) error {
		got, err := c.Run.Get(ctx, r.ID)
		if err != nil {
			return err
		}
		if got.SLACheckAt == nil || !got.SLACheckAt.Equal(*got.SLADeadlineAt) {
			t.Errorf("sla_check_at %v, deadline %v", got.SLACheckAt, got.SLADeadlineAt)
		}
		return nil
	})
}
