package runs

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// queueStats reads the tenant's backlog as x's viewer.
func (x *h) queueStats(workflowID, environmentID string) (time.Time, []control.BacklogRow, error) {
	var at time.Time
	var rows []control.BacklogRow
	err := x.try(func(ctx context.Context, _ *ent.Client) (err error) {
		at, rows, err = x.ctl.QueueStats(ctx, workflowID, environmentID)
		return err
	})
	return at, rows, err
}

// TestQueueStats: runs not started show as queued with their first step
// ready (and its age), an approval as a waiting run with an open approval
// (and its age), each by workflow and environment; a viewer reads it, a
// key of another environment and another tenant see none of it, and the
// sluice_backlog_* gauges say the same.
func TestQueueStats(t *testing.T) {
	t.Parallel()
	x := newH(t)
	queued := x.deploy(def("steps.a.output", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	t0 := x.clock.Now()
	x.start(queued, nil)
	x.start(queued, nil)
	x.rec.take() // no worker runs them: both first steps stay ready
	waiting, _, _ := approvalRun(x, "")
	x.clock.Advance(90 * time.Second)

	at, rows, err := x.as("user_viewer", viewer.RoleViewer).queueStats("", "")
	if err != nil {
		t.Fatal(err)
	}
	if !at.Equal(x.clock.Now()) || len(rows) != 2 {
		t.Fatalf("at %v, rows %+v", at, rows)
	}
	by := map[string]control.BacklogRow{}
	for _, r := range rows {
		if r.EnvironmentID != x.envID {
			t.Errorf("row of environment %s", r.EnvironmentID)
		}
		by[r.WorkflowID] = r
	}
	q := by[queued]
	if q.RunsQueued != 2 || q.RunsRunning != 0 || q.RunsWaiting != 0 || q.StepsReady != 2 || q.ApprovalsOpen != 0 ||
		q.OldestReadyAt == nil || !q.OldestReadyAt.Equal(t0) || q.OldestApprovalAt != nil {
		t.Errorf("queued workflow: %+v", q)
	}
	var waitingWF string
	x.in(func(ctx context.Context, c *ent.Client) error {
		r, err := c.Run.Get(ctx, waiting)
		waitingWF = r.WorkflowID
		return err
	})
	w := by[waitingWF]
	if w.RunsWaiting != 1 || w.RunsQueued != 0 || w.StepsReady != 0 || w.ApprovalsOpen != 1 ||
		w.OldestApprovalAt == nil || x.clock.Now().Sub(*w.OldestApprovalAt) < 90*time.Second {
		t.Errorf("waiting workflow: %+v", w)
	}

	// Filters.
	if _, rows, err := x.queueStats(queued, ""); err != nil || len(rows) != 1 || rows[0].WorkflowID != queued {
		t.Errorf("by workflow: %+v %v", rows, err)
	}
	if _, rows, err := x.queueStats("", x.envID); err != nil || len(rows) != 2 {
		t.Errorf("by environment: %+v %v", rows, err)
	}
	if _, _, err := x.queueStats("run_x", ""); errs.CodeOf(err) != errs.Validation || !strings.Contains(err.Error(), "workflowID") {
		t.Errorf("a run id as workflowID: %v", err)
	}

	// A key of another environment sees nothing of this one.
	var prodID string
	x.in(func(ctx context.Context, c *ent.Client) error {
		envs, err := c.Environment.Query().All(ctx)
		for _, e := range envs {
			if e.Name == "production" {
				prodID = e.ID
			}
		}
		return err
	})
	prod := x.as("key_prod", viewer.RoleViewer)
	prod.ctx = viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: x.tenantID, Subject: "key_prod", Roles: []string{viewer.RoleViewer}, EnvironmentID: prodID})
	if _, rows, err := prod.queueStats("", ""); err != nil || len(rows) != 0 {
		t.Errorf("a production key reads development's backlog: %+v %v", rows, err)
	}
	if _, _, err := prod.queueStats("", x.envID); errs.CodeOf(err) != errs.NotFound {
		t.Errorf("a production key asking for development: %v", err)
	}
	// Another tenant sees none of it.
	if _, rows, err := newH(t).queueStats("", ""); err != nil || len(rows) != 0 {
		t.Errorf("another tenant reads this backlog: %+v %v", rows, err)
	}

	// The gauges, read through the app role's pool for every tenant.
	col := control.NewBacklogCollector(testDB.App, nil, 0)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["tenant_id"] != x.tenantID || l["workflow_id"] != queued {
				continue
			}
			name := mf.GetName()
			if s := l["status"]; s != "" {
				name += "{" + s + "}"
			}
			found[name] = m.GetGauge().GetValue()
		}
	}
	if found["sluice_backlog_runs{queued}"] != 2 || found["sluice_backlog_steps_ready"] != 2 || found["sluice_backlog_oldest_ready_step_seconds"] <= 0 {
		t.Errorf("gauges of the queued workflow: %v", found)
	}
}
