package sla_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/auditlog"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/tenants"
)

func delayDef(d string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "wait", "type": "delay", "duration": d}}}
}

func dur(d string, sev slaspec.Severity) *slaspec.Duration {
	return &slaspec.Duration{Common: slaspec.Common{Severity: sev}, Duration: d}
}

func TestPolicyBadInputIsRefusedAndWritesNothing(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("10s"))
	foreign := newH(t)
	foreignWF := foreign.deploy(delayDef("10s"))
	cases := []struct {
		name string
		in   sla.PolicyInput
		path string
	}{
		{"negative duration", sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: dur("-2s", slaspec.Error)}}, "input.objectives.maxDuration.duration"},
		{"zero duration", sla.PolicyInput{Objectives: slaspec.Objectives{MaxQueueDelay: dur("0s", slaspec.Error)}}, "input.objectives.maxQueueDelay.duration"},
		{"not a duration", sla.PolicyInput{Objectives: slaspec.Objectives{MaxApprovalWait: dur("soon", slaspec.Error)}}, "input.objectives.maxApprovalWait.duration"},
		{"bad severity", sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: dur("2s", "LOUD")}}, "input.objectives.maxDuration.severity"},
		{"rate above 1", sla.PolicyInput{Objectives: slaspec.Objectives{MinSuccessRate: &slaspec.SuccessRate{Common: slaspec.Common{Severity: slaspec.Error}, Rate: 1.5, Window: "1h", MinRuns: 10}}}, "input.objectives.minSuccessRate.rate"},
		{"rate below 0", sla.PolicyInput{Objectives: slaspec.Objectives{MinSuccessRate: &slaspec.SuccessRate{Common: slaspec.Common{Severity: slaspec.Error}, Rate: -0.1, Window: "1h", MinRuns: 10}}}, "input.objectives.minSuccessRate.rate"},
		{"invalid cron", sla.PolicyInput{Objectives: slaspec.Objectives{CompleteBy: &slaspec.Deadline{Common: slaspec.Common{Severity: slaspec.Error}, Cron: "99 * * * *"}}}, "input.objectives.completeBy.cron"},
		{"unknown time zone", sla.PolicyInput{Objectives: slaspec.Objectives{CompleteBy: &slaspec.Deadline{Common: slaspec.Common{Severity: slaspec.Error}, Cron: "0 10 * * 1-5", TimeZone: "Mars/Olympus"}}}, "input.objectives.completeBy.timeZone"},
		{"unknown escalation policy", sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Error, EscalationPolicyID: ptr("esc_other")}, Duration: "2s"}}}, "input.objectives.maxDuration.escalationPolicyID"},
		{"foreign workflow", sla.PolicyInput{WorkflowID: &foreignWF, Objectives: slaspec.Objectives{MaxDuration: dur("2s", slaspec.Error)}}, "input.workflowID"},
		{"foreign environment", sla.PolicyInput{EnvironmentID: &foreign.envID, Objectives: slaspec.Objectives{MaxDuration: dur("2s", slaspec.Error)}}, "input.environmentID"},
	}
	for _, tc := range cases {
		err := x.try(func(ctx context.Context, _ *ent.Client) error {
			_, err := x.sla.CreatePolicy(ctx, tc.in)
			return err
		})
		e, ok := errs.As(err)
		if !ok || e.Code != errs.Validation || len(e.Problems) == 0 || e.Problems[0].Path != tc.path {
			t.Errorf("%s: got %v (%+v), want VALIDATION at %s", tc.name, err, e, tc.path)
		}
	}
	// A viewer may not create one.
	err := x.as("user_viewer", viewer.RoleViewer).try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.sla.CreatePolicy(ctx, sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{MaxDuration: dur("2s", slaspec.Error)}})
		return err
	})
	if errs.CodeOf(err) != errs.Forbidden {
		t.Errorf("viewer: %v, want FORBIDDEN", err)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n, err := c.SLAPolicy.Query().Count(ctx); err != nil || n != 0 {
			t.Errorf("policies written: %d, %v", n, err)
		}
		return nil
	})
	// One policy per scope.
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{MaxDuration: dur("2s", slaspec.Error)}})
	err = x.try(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.sla.CreatePolicy(ctx, sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{MaxQueueDelay: dur("2s", slaspec.Error)}})
		return err
	})
	if errs.CodeOf(err) != errs.Conflict {
		t.Errorf("second policy for a scope: %v, want CONFLICT", err)
	}
	// A known escalation policy is accepted.
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Error, EscalationPolicyID: ptr("esc_known")}, Duration: "1h"}}})
}

func TestEffectiveSLATakesTheMostSpecificPolicyPerObjective(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("10s"))
	tenantP := x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: dur("1h", slaspec.Info), MaxQueueDelay: dur("10m", slaspec.Info),
		MaxApprovalWait: dur("4h", slaspec.Warning)}})
	envP := x.policy(sla.PolicyInput{EnvironmentID: &x.envID, Objectives: slaspec.Objectives{MaxDuration: dur("30m", slaspec.Warning), MaxQueueDelay: dur("5m", slaspec.Warning)}})
	wfP := x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{MaxDuration: dur("10m", slaspec.Error)}})
	bothP := x.policy(sla.PolicyInput{WorkflowID: &wf, EnvironmentID: &x.envID, Objectives: slaspec.Objectives{MaxCostPerRun: &slaspec.Cost{Common: slaspec.Common{Severity: slaspec.Critical}, MicroUSD: 5000}}})
	var eff sla.Effective
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		eff, err = x.as("user_viewer", viewer.RoleViewer).sla.EffectiveFor(x.as("user_viewer", viewer.RoleViewer).withTx(ctx), wf, x.envID)
		return err
	})
	want := map[string]string{slaspec.MaxDuration: wfP.ID, slaspec.MaxQueueDelay: envP.ID, slaspec.MaxApprovalWait: tenantP.ID, slaspec.MaxCostPerRun: bothP.ID}
	for name, id := range want {
		if eff.Sources[name] == nil || eff.Sources[name].ID != id {
			t.Errorf("%s from %v, want %s", name, eff.Sources[name], id)
		}
	}
	if eff.Objectives.MaxDuration.Duration != "10m" || eff.Objectives.MaxQueueDelay.Duration != "5m" {
		t.Errorf("objectives: %+v", eff.Objectives)
	}
	// A new run gets its deadlines from the effective policy; the cache
	// follows an update in the same process.
	r := x.start(wf)
	if r.SLADeadlineAt == nil || !r.SLADeadlineAt.Equal(r.CreatedAt.Add(10*time.Minute)) {
		t.Errorf("deadline %v, created %v", r.SLADeadlineAt, r.CreatedAt)
	}
	if r.SLAQueueDeadlineAt == nil || !r.SLAQueueDeadlineAt.Equal(r.CreatedAt.Add(5*time.Minute)) {
		t.Errorf("queue deadline %v", r.SLAQueueDeadlineAt)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.sla.UpdatePolicy(ctx, wfP.ID, nil, slaspec.Objectives{MaxDuration: dur("20m", slaspec.Error)})
		return err
	})
	r = x.start(wf)
	if r.SLADeadlineAt == nil || !r.SLADeadlineAt.Equal(r.CreatedAt.Add(20*time.Minute)) {
		t.Errorf("after the update: deadline %v, created %v", r.SLADeadlineAt, r.CreatedAt)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		stored, err := c.Run.Get(ctx, r.ID)
		if err != nil {
			return err
		}
		if stored.SLADeadlineAt == nil || !stored.SLADeadlineAt.Equal(*r.SLADeadlineAt) {
			t.Errorf("stored deadline %v", stored.SLADeadlineAt)
		}
		return nil
	})
}

// withTx: the viewer's context with the transaction of ctx.
func (x *h) withTx(ctx context.Context) context.Context {
	return viewer.NewContext(ctx, viewer.FromContext(x.ctx))
}

func TestSweepReportsARunPastItsDeadlineOnceWhileItRuns(t *testing.T) {
	x := newH(t)
	x.endpoint()
	wf := x.deploy(delayDef("10s"))
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{
		MaxDuration: &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Critical, EscalationPolicyID: ptr("esc_known")}, Duration: "2s"}}})
	r := x.start(wf)
	if r.SLADeadlineAt == nil {
		t.Fatal("no deadline")
	}
	x.sweep()
	if n := len(x.incidents()); n != 0 {
		t.Fatalf("%d incidents before the deadline", n)
	}
	x.clock.Advance(3 * time.Second)
	x.sweep()
	x.sweep()
	list := x.incidents()
	if len(list) != 1 {
		t.Fatalf("%d incidents, want 1", len(list))
	}
	inc := list[0]
	if inc.Status != incident.StatusTriggered || inc.Severity != incident.SeverityCritical || inc.Count != 1 || inc.Objective != slaspec.MaxDuration ||
		len(inc.SampleRunIds) != 1 || inc.SampleRunIds[0] != r.ID || inc.EscalationPolicyID == nil || !inc.PerRun {
		t.Errorf("incident %+v", inc)
	}
	if n := x.deliveries(string(eventtype.SLABreached)); n != 1 {
		t.Errorf("%d sla.breached deliveries, want 1", n)
	}
	if len(x.esc.calls) != 1 || x.esc.calls[0] != "opened esc_known" {
		t.Errorf("escalator calls %v", x.esc.calls)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		got, err := c.Run.Get(ctx, r.ID)
		if err != nil {
			return err
		}
		if got.Status != run.StatusWaiting {
			t.Errorf("the run is %s, want it left waiting", got.Status)
		}
		if got.SLACheckAt != nil {
			t.Errorf("sla_check_at %v left after the breach", got.SLACheckAt)
		}
		return nil
	})
	// A second run's breach joins the open incident.
	r2 := x.start(wf)
	x.clock.Advance(3 * time.Second)
	x.sweep()
	list = x.incidents()
	if len(list) != 1 || list[0].Count != 2 || len(list[0].SampleRunIds) != 2 || list[0].SampleRunIds[1] != r2.ID {
		t.Errorf("after a second breach: %+v", list)
	}
	if n := x.deliveries(string(eventtype.SLABreached)); n != 2 {
		t.Errorf("%d sla.breached deliveries, want 2", n)
	}
}

func TestSandboxReplaysGetNoDeadline(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("1s"))
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: dur("2s", slaspec.Error)}})
	r := x.start(wf)
	var replay *ent.Run
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		replay, err = x.runs.ReplayRun(ctx, runs.ReplayInput{RunID: r.ID, Sandbox: true})
		return err
	})
	if replay.SLADeadlineAt != nil {
		t.Errorf("a sandbox replay got deadline %v", replay.SLADeadlineAt)
	}
	var live *ent.Run
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		live, err = x.runs.ReplayRun(ctx, runs.ReplayInput{RunID: r.ID})
		return err
	})
	if live.SLADeadlineAt == nil {
		t.Error("a live replay got no deadline")
	}
}

func TestIncidentTransitions(t *testing.T) {
	x := newH(t)
	x.endpoint()
	wf := x.deploy(delayDef("10s"))
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{
		MaxDuration: &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Error, EscalationPolicyID: ptr("esc_known")}, Duration: "1s"}}})
	x.start(wf)
	x.clock.Advance(2 * time.Second)
	x.sweep()
	inc := x.incidents()[0]
	call := func(y *h, fn func(ctx context.Context) (*ent.Incident, error)) (*ent.Incident, error) {
		var out *ent.Incident
		err := y.try(func(ctx context.Context, _ *ent.Client) (err error) {
			out, err = fn(ctx)
			return err
		})
		return out, err
	}
	note := "looking"
	if _, err := call(x.as("user_viewer", viewer.RoleViewer), func(ctx context.Context) (*ent.Incident, error) { return x.sla.AcknowledgeIncident(ctx, inc.ID, nil) }); errs.CodeOf(err) != errs.Forbidden {
		t.Errorf("viewer acknowledges: %v", err)
	}
	other := newH(t)
	if _, err := call(other, func(ctx context.Context) (*ent.Incident, error) {
		return other.sla.AcknowledgeIncident(ctx, inc.ID, nil)
	}); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("another tenant acknowledges: %v", err)
	}
	if _, err := call(other, func(ctx context.Context) (*ent.Incident, error) { return other.sla.ResolveIncident(ctx, inc.ID, nil) }); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("another tenant resolves: %v", err)
	}
	op := x.as("user_op", viewer.RoleOperator)
	got, err := call(op, func(ctx context.Context) (*ent.Incident, error) { return x.sla.AcknowledgeIncident(ctx, inc.ID, &note) })
	if err != nil || got.Status != incident.StatusAcknowledged || *got.AcknowledgedBy != "user_op" || *got.Note != note {
		t.Fatalf("acknowledge: %v %+v", err, got)
	}
	if _, err := call(op, func(ctx context.Context) (*ent.Incident, error) { return x.sla.AcknowledgeIncident(ctx, inc.ID, nil) }); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("acknowledge twice: %v", err)
	}
	got, err = call(op, func(ctx context.Context) (*ent.Incident, error) { return x.sla.ResolveIncident(ctx, inc.ID, nil) })
	if err != nil || got.Status != incident.StatusResolved || *got.ResolvedBy != "user_op" || got.ResolvedAt == nil {
		t.Fatalf("resolve: %v %+v", err, got)
	}
	if _, err := call(op, func(ctx context.Context) (*ent.Incident, error) { return x.sla.ResolveIncident(ctx, inc.ID, nil) }); errs.CodeOf(err) != errs.Conflict {
		t.Errorf("resolve twice: %v", err)
	}
	for _, typ := range []eventtype.Type{eventtype.IncidentAcknowledged, eventtype.IncidentResolved} {
		if n := x.deliveries(string(typ)); n != 1 {
			t.Errorf("%d %s deliveries", n, typ)
		}
	}
	want := []string{"opened esc_known", "acknowledged by user_op", "resolved by user_op"}
	if fmt.Sprint(x.esc.calls) != fmt.Sprint(want) {
		t.Errorf("escalator calls %v, want %v", x.esc.calls, want)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		for _, action := range []string{"incident.open", "incident.acknowledge", "incident.resolve"} {
			n, err := c.AuditLog.Query().Where(auditlog.Action(action)).Count(ctx)
			if err != nil || n != 1 {
				t.Errorf("audit %s: %d, %v", action, n, err)
			}
		}
		return nil
	})
	// A new breach opens a new incident (the old one is resolved).
	x.start(wf)
	x.clock.Advance(2 * time.Second)
	x.sweep()
	if list := x.incidents(); len(list) != 2 {
		t.Errorf("%d incidents after a breach following a resolve, want 2", len(list))
	}
}

func TestAnEnvironmentScopedCallerGetsTheTenantsDeadlines(t *testing.T) {
	x := newH(t)
	wf := x.deploy(delayDef("10s"))
	x.policy(sla.PolicyInput{Objectives: slaspec.Objectives{MaxDuration: dur("1h", slaspec.Error)}})
	scoped := x.as("key_ci", viewer.RoleOperator)
	scoped.ctx = viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: x.tenantID, Subject: "key_ci", Roles: []string{viewer.RoleOperator},
		EnvironmentID: x.envID, APIKeyID: "key_ci"})
	// The first start after the change reads (and caches) the policies,
	// as the scoped caller: the tenant default must be among them.
	r := scoped.start(wf)
	if r.SLADeadlineAt == nil {
		t.Fatal("a run started by an environment-scoped key got no deadline from the tenant default policy")
	}
	var eff sla.Effective
	scoped.in(func(ctx context.Context, _ *ent.Client) (err error) {
		eff, err = x.sla.EffectiveFor(ctx, wf, x.envID)
		return err
	})
	if eff.Objectives.MaxDuration == nil {
		t.Error("effectiveSLA for an environment-scoped key misses the tenant default")
	}
}

// TestASweepThatFailsRecordsNothing: a sweep whose transaction fails part
// way (here the escalator, after the breach row and the incident were
// written) leaves no trace, and the next one records each breach once.
func TestASweepThatFailsRecordsNothing(t *testing.T) {
	x := newH(t)
	x.endpoint()
	wf := x.deploy(delayDef("10s"))
	x.policy(sla.PolicyInput{WorkflowID: &wf, Objectives: slaspec.Objectives{
		MaxDuration: &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Error, EscalationPolicyID: ptr("esc_known")}, Duration: "1s"}}})
	r1, r2 := x.start(wf), x.start(wf)
	x.clock.Advance(2 * time.Second)
	x.esc.fail = true
	if _, err := x.sla.Sweep(context.Background()); err == nil {
		t.Fatal("the sweep did not report the failure")
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		if n, _ := c.SLABreach.Query().Count(ctx); n != 0 {
			t.Errorf("%d breaches left by a failed sweep", n)
		}
		for _, id := range []string{r1.ID, r2.ID} {
			got, err := c.Run.Get(ctx, id)
			if err != nil {
				return err
			}
			if got.SLACheckAt == nil {
				t.Errorf("run %s moved on by a failed sweep", id)
			}
		}
		return nil
	})
	if len(x.incidents()) != 0 || x.deliveries(string(eventtype.SLABreached)) != 0 {
		t.Error("a failed sweep left an incident or a delivery")
	}
	x.esc.fail = false
	x.sweep()
	x.sweep()
	list := x.incidents()
	if len(list) != 1 || list[0].Count != 2 {
		t.Fatalf("incidents %+v", list)
	}
	if n := x.deliveries(string(eventtype.SLABreached)); n != 2 {
		t.Errorf("%d sla.breached deliveries, want 2", n)
	}
}

// TestTheManifestIsTheTenantDefaultPolicy: applying a tenant manifest
// writes its sla section into the tenant default policy and keeps the
// policy's other objectives and what an admin set on those two.
func TestTheManifestIsTheTenantDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	m, err := tenants.Default()
	if err != nil {
		t.Fatal(err)
	}
	m.Slug, m.Name = "t-"+testdb.RandHex(6), "manifest"
	ap := &tenants.Applier{Client: testDB.Owner, Keys: secrets.DevKeyRing(), Out: io.Discard}
	tn, err := ap.Apply(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	x := newHFor(t, tn.ID)
	var p *ent.SLAPolicy
	read := func() {
		x.in(func(ctx context.Context, c *ent.Client) (err error) {
			p, err = c.SLAPolicy.Query().Only(ctx)
			return err
		})
	}
	read()
	if p.Objectives.MaxDuration.Duration != "15m" || p.Objectives.MaxDuration.Severity != slaspec.Error ||
		p.Objectives.MaxApprovalWait.Duration != "4h" || p.Objectives.MaxApprovalWait.Severity != slaspec.Warning {
		t.Fatalf("default policy %+v", p.Objectives)
	}
	// An admin adds an objective and raises a severity.
	x.in(func(ctx context.Context, _ *ent.Client) error {
		o := p.Objectives
		o.MaxDuration = &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Critical}, Duration: "15m"}
		o.MaxQueueDelay = dur("1m", slaspec.Info)
		_, err := x.sla.UpdatePolicy(ctx, p.ID, nil, o)
		return err
	})
	m.SLA.RunDuration = "20m"
	if _, err := ap.Apply(ctx, m); err != nil {
		t.Fatal(err)
	}
	read()
	if p.Objectives.MaxDuration.Duration != "20m" || p.Objectives.MaxDuration.Severity != slaspec.Critical || p.Objectives.MaxQueueDelay == nil {
		t.Errorf("after a second apply %+v", p.Objectives)
	}
}
