package sla

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The window evaluator is responsible for the objectives judged over a
// sliding window of finished live runs (minSuccessRate, maxCostPerWindow):
// every WindowInterval, one aggregate statement per tenant and window
// length (count and sum with FILTER over runs finished in the window,
// through the index run_tenant_id_finished_at), grouped by workflow and
// environment; each group counts towards the policy its objective comes
// from (most specific wins). Runs are never loaded. A breach opens the
// objective's incident (or updates the open one); an open window incident
// resolves by itself once the objective held for two evaluations in a row.

// WindowName is the window evaluator's singleton name.
const WindowName = "sla-window"

// healthyToResolve is how many evaluations in a row an objective must hold
// for its open window incident to resolve.
const healthyToResolve = 2

// WindowAggregateSQL aggregates a tenant's live runs finished in
// ($2, $3], per workflow and environment.
const WindowAggregateSQL = `SELECT workflow_id, environment_id,
	count(*) FILTER (WHERE status = 'succeeded'),
	count(*) FILTER (WHERE status = 'failed' AND coalesce(error_class, '') <> 'permanent'),
	count(*) FILTER (WHERE status = 'failed' AND error_class = 'permanent'),
	coalesce(sum(cost_micro_usd), 0)
	FROM runs WHERE tenant_id = $1 AND finished_at IS NOT NULL AND mode = 'live' AND finished_at > $2 AND finished_at <= $3
	GROUP BY workflow_id, environment_id`

type aggregate struct {
	succeeded, failed, failedPermanent, cost int64
}

func (a *aggregate) add(b aggregate) {
	a.succeeded += b.succeeded
	a.failed += b.failed
	a.failedPermanent += b.failedPermanent
	a.cost += b.cost
}

// WindowReport counts what one evaluation did.
type WindowReport struct {
	Evaluated int // (policy, objective) pairs with a verdict
	Breached  int
	Resolved  int
}

// EvaluateWindows evaluates every tenant's window objectives once (no
// singleton lock; RunWindowEvaluator takes it).
func (s *Service) EvaluateWindows(ctx context.Context) (WindowReport, error) {
	var rep WindowReport
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return rep, err
	}
	return rep, store.EachTenant(ctx, tenants, func(tid string) error { return s.evaluateTenant(ctx, tid, &rep) })
}

// verdict of one (policy, objective).
type verdict struct {
	policy    *ent.SLAPolicy
	objective string
	agg       aggregate
}

func (s *Service) evaluateTenant(ctx context.Context, tenantID string, rep *WindowReport) error {
	now := s.now()
	return store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		var version int64
		if err := q.QueryRow(ctx, `SELECT sla_version FROM tenants WHERE id = $1`, tenantID).Scan(&version); err != nil {
			return fmt.Errorf("read sla version: %w", err)
		}
		policies, err := s.tenantPolicies(ctx, c, tenantID, version)
		if err != nil {
			return err
		}
		// Every (policy, objective) in force somewhere, by window length.
		windows := map[string]bool{}
		verdicts := map[string]*verdict{} // incident key -> verdict
		for _, p := range policies {
			if o := p.Objectives.MinSuccessRate; o != nil {
				windows[o.Window] = true
				verdicts[IncidentKey(p, slaspec.MinSuccessRate)] = &verdict{policy: p, objective: slaspec.MinSuccessRate}
			}
			if o := p.Objectives.MaxCostPerWindow; o != nil {
				windows[o.Window] = true
				verdicts[IncidentKey(p, slaspec.MaxCostPerWindow)] = &verdict{policy: p, objective: slaspec.MaxCostPerWindow}
			}
			if p.Objectives.CompleteBy != nil {
				// Judged per instant (completeby.go); listed so its open
				// incident is not taken for an orphan.
				verdicts[IncidentKey(p, slaspec.CompleteBy)] = &verdict{policy: p, objective: slaspec.CompleteBy}
			}
		}
		if err := s.evaluateCompleteBy(ctx, c, q, tenantID, policies, now, rep); err != nil {
			return err
		}
		if len(windows) == 0 {
			return s.resolveOrphans(ctx, c, tenantID, verdicts)
		}
		for w := range windows {
			rows, err := q.Query(ctx, WindowAggregateSQL, tenantID, now.Add(-slaspec.MustDuration(w)), now)
			if err != nil {
				return fmt.Errorf("window aggregate: %w", err)
			}
			type group struct {
				wf, env string
				agg     aggregate
			}
			var groups []group
			for rows.Next() {
				var g group
				if err := rows.Scan(&g.wf, &g.env, &g.agg.succeeded, &g.agg.failed, &g.agg.failedPermanent, &g.agg.cost); err != nil {
					rows.Close()
					return err
				}
				groups = append(groups, g)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, g := range groups {
				eff := Resolve(policies, g.wf, g.env)
				if o := eff.Objectives.MinSuccessRate; o != nil && o.Window == w {
					verdicts[IncidentKey(eff.Sources[slaspec.MinSuccessRate], slaspec.MinSuccessRate)].agg.add(g.agg)
				}
				if o := eff.Objectives.MaxCostPerWindow; o != nil && o.Window == w {
					verdicts[IncidentKey(eff.Sources[slaspec.MaxCostPerWindow], slaspec.MaxCostPerWindow)].agg.add(g.agg)
				}
			}
		}
		for key, v := range verdicts {
			breached, details, ok := judgeWindow(v)
			if !ok {
				continue // too few runs: no verdict
			}
			rep.Evaluated++
			if breached {
				rep.Breached++
				if _, err := s.record(ctx, c, tenantID, breach{policy: v.policy, objective: v.objective, details: details}, now); err != nil {
					return err
				}
				continue
			}
			inc, err := openIncident(ctx, c, key)
			if err != nil || inc == nil {
				return err
			}
			resolved, err := s.healthy(ctx, c, tenantID, inc, details)
			if err != nil {
				return err
			}
			if resolved {
				rep.Resolved++
			}
		}
		return s.resolveOrphans(ctx, c, tenantID, verdicts)
	})
}

// judgeWindow returns whether a window objective is breached, its
// measurement, and whether there is a verdict at all.
func judgeWindow(v *verdict) (breached bool, details map[string]any, ok bool) {
	switch v.objective {
	case slaspec.MinSuccessRate:
		o := v.policy.Objectives.MinSuccessRate
		failed := v.agg.failed
		if o.CountPermanent {
			failed += v.agg.failedPermanent
		}
		n := v.agg.succeeded + failed
		if n < int64(o.MinRuns) || n == 0 {
			return false, nil, false
		}
		rate := float64(v.agg.succeeded) / float64(n)
		return rate < o.Rate, map[string]any{"rate": rate, "minRate": o.Rate, "runs": n, "succeeded": v.agg.succeeded, "failed": failed, "window": o.Window}, true
	case slaspec.MaxCostPerWindow:
		o := v.policy.Objectives.MaxCostPerWindow
		return v.agg.cost > o.MicroUSD, map[string]any{"costMicroUSD": v.agg.cost, "limitMicroUSD": o.MicroUSD, "window": o.Window}, true
	}
	return false, nil, false
}

// healthy counts an evaluation in which an open window incident's
// objective held, and resolves the incident at the second in a row.
func (s *Service) healthy(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, details map[string]any) (bool, error) {
	if inc.HealthyEvaluations+1 < healthyToResolve {
		return false, inc.Update().AddHealthyEvaluations(1).Exec(ctx)
	}
	if err := inc.Update().AddHealthyEvaluations(1).SetDetails(details).Exec(ctx); err != nil {
		return false, err
	}
	note := fmt.Sprintf("the objective held for %d evaluations in a row", healthyToResolve)
	inc, err := s.resolve(ctx, c, tenantID, inc, "sluice", &note)
	if err != nil {
		return false, err
	}
	return true, audit.Record(ctx, c, "incident.resolve", "Incident", inc.ID, map[string]any{"auto": true})
}

// resolveOrphans resolves open window incidents whose objective no policy
// sets any more (deleted or changed): nothing will ever judge them again.
func (s *Service) resolveOrphans(ctx context.Context, c *ent.Client, tenantID string, verdicts map[string]*verdict) error {
	open, err := c.Incident.Query().Where(incident.PerRun(false), incident.StatusNEQ(incident.StatusResolved)).All(ctx)
	if err != nil {
		return err
	}
	for _, inc := range open {
		if _, ok := verdicts[inc.Key]; ok {
			continue
		}
		note := "its SLA objective was removed"
		if _, err := s.resolve(ctx, c, tenantID, inc, "sluice", &note); err != nil {
			return err
		}
		if err := audit.Record(ctx, c, "incident.resolve", "Incident", inc.ID, map[string]any{"auto": true}); err != nil {
			return err
		}
	}
	return nil
}

// RunWindowEvaluator evaluates window objectives every WindowInterval
// until ctx ends, under the singleton lock.
func (s *Service) RunWindowEvaluator(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, WindowName, s.log, func() time.Duration { return s.o.WindowInterval }, func(ctx context.Context) error {
		_, err := s.EvaluateWindows(ctx)
		return err
	})
}
