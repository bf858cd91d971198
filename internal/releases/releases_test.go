package releases_test

// The analysis against a real Postgres (internal/testdb) on the app role's
// pool, with an injected clock: runs are written as finished rows of each
// side, and Analyze is called directly (RunAnalyzer only adds the loop and
// the singleton lock).

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/auditlog"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/releases"
	"github.com/sluicehq/sluice/internal/releasespec"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "reltest", &testDB))
}

type h struct {
	t                             *testing.T
	clock                         *testdb.Clock
	rel                           *releases.Service
	ctx                           context.Context
	tenantID, envID, wfID, v1, v2 string
}

func def(text string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "a", "type": "transform", "output": "'" + text + "'"}}}
}

func newH(t *testing.T) *h {
	t.Helper()
	tenantID, err := testDB.Tenant(context.Background(), "release test")
	if err != nil {
		t.Fatal(err)
	}
	clk := testdb.NewClock(time.Now())
	x := &h{t: t, clock: clk, tenantID: tenantID,
		rel: releases.New(releases.Options{Client: testDB.App, Now: clk.Now}),
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
		x.wfID = wf.ID
		for i, text := range []string{"one", "two"} {
			v, err := ctl.CreateWorkflowVersion(ctx, wf.ID, def(text))
			if err != nil {
				return err
			}
			if _, err := ctl.PublishWorkflowVersion(ctx, v.ID); err != nil {
				return err
			}
			if i == 0 {
				x.v1 = v.ID
				if _, err := ctl.DeployWorkflowVersion(ctx, v.ID, x.envID); err != nil {
					return err
				}
			} else {
				x.v2 = v.ID
			}
		}
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

func (x *h) create(steps []releasespec.Step, a releasespec.Analysis) *ent.Release {
	x.t.Helper()
	var r *ent.Release
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		r, err = x.rel.CreateRelease(ctx, releases.CreateInput{WorkflowID: x.wfID, EnvironmentID: x.envID, CandidateVersionID: x.v2, Steps: steps, Analysis: &a})
		return err
	})
	return r
}

// finished writes n runs of a side of r that finished now with status
// (and error class when failed).
func (x *h) finished(r *ent.Release, side run.ReleaseSide, n int, status run.Status, class string) {
	x.t.Helper()
	version := x.v1
	if side == run.ReleaseSideCandidate {
		version = x.v2
	}
	now := x.clock.Now()
	x.in(func(ctx context.Context, c *ent.Client) error {
		for range n {
			q := c.Run.Create().SetID(ids.New(ids.Run)).SetWorkflowID(x.wfID).SetVersionID(version).SetEnvironmentID(x.envID).
				SetStatus(status).SetInput(map[string]any{}).SetInputHash("h").SetCreatedBy("test").
				SetReleaseID(r.ID).SetReleaseSide(side).SetCreatedAt(now.Add(-time.Second)).SetUpdatedAt(now).SetFinishedAt(now).
				SetCostMicroUsd(100)
			if class != "" {
				q.SetErrorClass(class)
			}
			if err := q.Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
}

func (x *h) analyze() *ent.Release {
	x.t.Helper()
	if _, err := x.rel.Analyze(context.Background()); err != nil {
		x.t.Fatal(err)
	}
	var r *ent.Release
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		r, err = c.Release.Query().Where(release.WorkflowID(x.wfID)).Order(ent.Desc(release.FieldCreatedAt)).First(ctx)
		return err
	})
	return r
}

func (x *h) deployed() string {
	x.t.Helper()
	var v string
	x.in(func(ctx context.Context, c *ent.Client) error {
		d, err := c.Deployment.Query().Where(deployment.WorkflowID(x.wfID), deployment.EnvironmentID(x.envID), deployment.Active(true)).Only(ctx)
		if err == nil {
			v = d.VersionID
		}
		return err
	})
	return v
}

// TestAnalysisHoldsAdvancesAndPromotes: too little data holds; a healthy
// step holds until holdFor has passed, then advances; at 100% the
// candidate is compared with the release's stable runs and, healthy,
// promoted: it becomes the deployment.
func TestAnalysisHoldsAdvancesAndPromotes(t *testing.T) {
	x := newH(t)
	r := x.create([]releasespec.Step{{WeightPercent: 10, HoldFor: "10m"}, {WeightPercent: 100}}, releasespec.Analysis{MinRunsPerSide: 5})
	if r.State != release.StateProgressing || r.WeightPercent != 10 || r.StableVersionID != x.v1 {
		t.Fatalf("created %+v", r)
	}
	if r = x.analyze(); r.StepIndex != 0 || r.LastAnalysis.Verdict != string(releasespec.Inconclusive) {
		t.Fatalf("no runs: step %d, %+v", r.StepIndex, r.LastAnalysis)
	}
	x.finished(r, run.ReleaseSideStable, 5, run.StatusSucceeded, "")
	x.finished(r, run.ReleaseSideCandidate, 4, run.StatusSucceeded, "")
	if r = x.analyze(); r.StepIndex != 0 || r.LastAnalysis.Verdict != string(releasespec.Inconclusive) {
		t.Fatalf("4 candidate runs: step %d, %+v", r.StepIndex, r.LastAnalysis)
	}
	x.finished(r, run.ReleaseSideCandidate, 1, run.StatusSucceeded, "")
	if r = x.analyze(); r.StepIndex != 0 || r.LastAnalysis.Verdict != string(releasespec.Healthy) {
		t.Fatalf("healthy before holdFor: step %d, %+v", r.StepIndex, r.LastAnalysis)
	}
	x.clock.Advance(10 * time.Minute)
	if r = x.analyze(); r.StepIndex != 1 || r.WeightPercent != 100 || !r.StepStartedAt.Equal(x.clock.Now()) {
		t.Fatalf("after holdFor: step %d weight %d started %s", r.StepIndex, r.WeightPercent, r.StepStartedAt)
	}
	// The new step's window: no candidate run yet.
	if r = x.analyze(); r.State != release.StateProgressing || r.LastAnalysis.Verdict != string(releasespec.Inconclusive) || r.LastAnalysis.Stable.Runs != 5 {
		t.Fatalf("new step: %s %+v", r.State, r.LastAnalysis)
	}
	x.clock.Advance(time.Second)
	x.finished(r, run.ReleaseSideCandidate, 5, run.StatusSucceeded, "")
	if r = x.analyze(); r.State != release.StatePromoted || r.WeightPercent != 100 || r.FinishedAt == nil {
		t.Fatalf("not promoted: %s %+v", r.State, r.LastAnalysis)
	}
	if v := x.deployed(); v != x.v2 {
		t.Fatalf("deployed %s, want the candidate %s", v, x.v2)
	}
	if len(r.Analyses) != 6 {
		t.Errorf("%d analyses recorded, want 6", len(r.Analyses))
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		n, err := c.AuditLog.Query().Where(auditlog.TargetID(r.ID), auditlog.ActionIn("release.create", "release.progress", "release.promote")).Count(ctx)
		if err == nil && n != 3 {
			t.Errorf("%d audit entries, want 3", n)
		}
		return err
	})
}

// TestAnalysisRollsBackOnBreach: a candidate failing 40% transiently
// against a healthy stable side rolls back at once, whatever its holdFor;
// permanent failures are counted apart and left out of the rate.
func TestAnalysisRollsBackOnBreach(t *testing.T) {
	x := newH(t)
	r := x.create([]releasespec.Step{{WeightPercent: 10, HoldFor: "1h"}, {WeightPercent: 50}}, releasespec.Analysis{MinRunsPerSide: 10})
	x.finished(r, run.ReleaseSideStable, 40, run.StatusSucceeded, "")
	x.finished(r, run.ReleaseSideStable, 5, run.StatusFailed, "permanent")
	x.finished(r, run.ReleaseSideCandidate, 6, run.StatusSucceeded, "")
	x.finished(r, run.ReleaseSideCandidate, 4, run.StatusFailed, "transient")
	x.finished(r, run.ReleaseSideCandidate, 3, run.StatusFailed, "permanent")
	r = x.analyze()
	if r.State != release.StateRolledBack || r.WeightPercent != 0 || r.Reason == nil || r.StepIndex != 0 {
		t.Fatalf("not rolled back: %s %+v", r.State, r.LastAnalysis)
	}
	f := r.LastAnalysis
	if f.Verdict != string(releasespec.Breach) || f.Candidate.Runs != 10 || f.Candidate.Excluded != 3 || f.Stable.Runs != 40 || f.Stable.Excluded != 5 {
		t.Errorf("figures %+v", f)
	}
	if v := x.deployed(); v != x.v1 {
		t.Errorf("deployed %s after a rollback, want the stable %s", v, x.v1)
	}
	// Rolled back: the next analysis leaves it alone.
	if r = x.analyze(); r.State != release.StateRolledBack || len(r.Analyses) != 1 {
		t.Errorf("after: %s, %d analyses", r.State, len(r.Analyses))
	}
}
