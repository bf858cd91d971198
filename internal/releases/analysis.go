package releases

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/releasespec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The analysis runs under store.Singleton (AnalysisName): one at a time
// across workers, every Options.Interval. Everything it needs is in
// Postgres (a release's state, step and step start, and the runs), so a
// worker that dies mid-analysis loses nothing: each release is judged and
// moved in one transaction of its tenant, and the next analysis, in
// whichever worker, starts from what committed.

// AnalysisName is the analysis's singleton (advisory lock) name.
const AnalysisName = "release-analysis"

// SideSQL measures both sides of a release over the runs finished since
// $3 on the stable side and since $4 (>= $3) on the candidate side ($1
// tenant, $2 release), through run_tenant_id_release_id_finished_at.
// Runs failed with class permanent (bad input) are counted apart and left
// out of the rate, the p95 and the cost; cancelled runs are left out.
const SideSQL = `SELECT release_side,
	count(*) FILTER (WHERE status = 'succeeded'),
	count(*) FILTER (WHERE status = 'failed' AND error_class IS DISTINCT FROM 'permanent'),
	count(*) FILTER (WHERE status = 'failed' AND error_class = 'permanent'),
	coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - created_at) * 1000)
		FILTER (WHERE status = 'succeeded' OR error_class IS DISTINCT FROM 'permanent'), 0),
	coalesce(avg(cost_micro_usd) FILTER (WHERE status = 'succeeded' OR error_class IS DISTINCT FROM 'permanent'), 0)
	FROM runs WHERE tenant_id = $1 AND release_id = $2 AND finished_at IS NOT NULL AND finished_at >= $3
	AND (release_side = 'STABLE' OR finished_at >= $4)
	AND status IN ('succeeded', 'failed')
	GROUP BY release_side`

// Report counts what one analysis did.
type Report struct {
	Tenants, Releases, Advanced, Promoted, RolledBack, Held int
}

// Analyze judges every progressing release of every tenant once. It does
// not take the singleton lock (RunAnalyzer does); tests call it directly.
func (s *Service) Analyze(ctx context.Context) (Report, error) {
	var rep Report
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return rep, err
	}
	return rep, store.EachTenant(ctx, tenants, func(tid string) error {
		rep.Tenants++
		return s.analyzeTenant(ctx, tid, &rep)
	})
}

func (s *Service) analyzeTenant(ctx context.Context, tenantID string, rep *Report) error {
	var ids []string
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		var err error
		ids, err = ent.FromContext(ctx).Release.Query().Where(release.StateEQ(release.StateProgressing)).IDs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	var all []error
	for _, id := range ids {
		rep.Releases++
		err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
			return s.analyzeRelease(ctx, ent.FromContext(ctx), id, rep)
		})
		if err != nil {
			all = append(all, fmt.Errorf("release %s: %w", id, err))
		}
	}
	return errors.Join(all...)
}

// measure reads both sides' figures over the same window: runs finished
// since the step began. At a step of 100% no new run goes to stable, so
// the candidate is compared with every stable run of the release.
func measure(ctx context.Context, c *ent.Client, r *ent.Release) (stable, candidate releasespec.Side, err error) {
	stableSince := r.StepStartedAt
	if r.WeightPercent >= 100 {
		stableSince = r.CreatedAt
	}
	rows, err := c.QueryContext(ctx, SideSQL, r.TenantID, r.ID, stableSince, r.StepStartedAt)
	if err != nil {
		return stable, candidate, err
	}
	defer rows.Close()
	for rows.Next() {
		var side sql.NullString
		var succeeded, failed, excluded int
		var p95, cost float64
		if err := rows.Scan(&side, &succeeded, &failed, &excluded, &p95, &cost); err != nil {
			return stable, candidate, err
		}
		f := releasespec.Side{Runs: succeeded + failed, Succeeded: succeeded, Excluded: excluded, P95DurationMs: p95, CostPerRun: cost}
		if f.Runs > 0 {
			f.SuccessRate = float64(succeeded) / float64(f.Runs)
		}
		f.SuccessRateLower, f.SuccessRateUpper = releasespec.Wilson(succeeded, f.Runs)
		switch side.String {
		case "STABLE":
			stable = f
		case "CANDIDATE":
			candidate = f
		}
	}
	if stable.Runs == 0 {
		stable.SuccessRateLower, stable.SuccessRateUpper = releasespec.Wilson(0, 0)
	}
	if candidate.Runs == 0 {
		candidate.SuccessRateLower, candidate.SuccessRateUpper = releasespec.Wilson(0, 0)
	}
	return stable, candidate, rows.Err()
}

// analyzeRelease judges one release in its tenant's transaction and acts:
// a breach rolls it back, a healthy step held long enough (holdFor, and
// minRuns candidate runs) moves to the next step or, past the last,
// promotes; too little data holds it.
func (s *Service) analyzeRelease(ctx context.Context, c *ent.Client, id string, rep *Report) error {
	r, err := c.Release.Query().Where(release.ID(id)).ForUpdate().Only(ctx)
	if err != nil {
		return err
	}
	if r.State != release.StateProgressing {
		return nil // changed since listed
	}
	now := s.o.Now()
	stable, candidate, err := measure(ctx, c, r)
	if err != nil {
		return err
	}
	verdict, reasons := releasespec.Judge(r.Analysis, stable, candidate)
	fig := releasespec.Figures{At: now, Step: r.StepIndex, WeightPercent: r.WeightPercent, Since: r.StepStartedAt,
		Stable: stable, Candidate: candidate, Verdict: string(verdict), Reasons: reasons}
	history := append(r.Analyses, fig)
	if len(history) > keepFigures {
		history = history[len(history)-keepFigures:]
	}
	u := r.Update().SetAnalyzedAt(now).SetLastAnalysis(fig).SetAnalyses(history).SetUpdatedAt(now)
	step := r.Steps[r.StepIndex]
	held := now.Sub(r.StepStartedAt) >= step.Hold() && candidate.Runs >= step.MinRuns
	sys := viewer.FromContext(ctx)
	switch {
	case verdict == releasespec.Breach:
		if r, err = u.Save(ctx); err != nil {
			return err
		}
		rep.RolledBack++
		reason := "analysis breach"
		if len(reasons) > 0 {
			reason = "analysis breach: " + reasons[0]
		}
		if _, err = s.end(ctx, c, sys, r, release.StateRolledBack, reason); err != nil || s.o.Incidents == nil {
			return err
		}
		return s.o.Incidents.ReleaseRolledBack(ctx, c, r.TenantID, r.ID, r.WorkflowID, r.EnvironmentID,
			map[string]any{"reason": reason, "candidateVersionID": r.CandidateVersionID, "stableVersionID": r.StableVersionID, "analysis": fig}, now)
	case verdict == releasespec.Healthy && held && r.StepIndex+1 < len(r.Steps):
		next := r.StepIndex + 1
		r, err = u.SetStepIndex(next).SetWeightPercent(r.Steps[next].WeightPercent).SetStepStartedAt(now).Save(ctx)
		if err != nil {
			return err
		}
		rep.Advanced++
		return s.record(ctx, c, r, eventtype.ReleaseProgressed, "release.progress", map[string]any{"analysis": fig})
	case verdict == releasespec.Healthy && held:
		if r, err = u.Save(ctx); err != nil {
			return err
		}
		rep.Promoted++
		_, err = s.promote(ctx, c, sys, r, "promoted by the analysis past its last step")
		return err
	default:
		rep.Held++
		return u.Exec(ctx)
	}
}

// RunAnalyzer analyses releases every Interval until ctx ends, under the
// singleton lock.
func (s *Service) RunAnalyzer(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, AnalysisName, s.log, func() time.Duration { return s.o.Interval }, func(ctx context.Context) error {
		_, err := s.Analyze(ctx)
		return err
	})
}
