package evals

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/evaluation"
	"github.com/sluicehq/sluice/ent/evaluationexample"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// The driver is responsible for moving open evaluations on: it collects
// the replays that finished (scoring them), stops an evaluation whose
// budget is spent, starts new replays up to its concurrency and completes
// it when every example is done. Everything it knows is in Postgres (the
// examples' status and candidate run ids), so a worker that dies, or a
// Redis that is wiped, loses nothing: the next pass, in whichever worker,
// picks up where the last commit left. It runs under store.Singleton
// ("evaluations"): one pass at a time across workers.

// DriverName is the driver's singleton (advisory lock) name.
const DriverName = "evaluations"

// busyInterval is how soon the driver passes again while evaluations are
// open (Interval when that is shorter): their replays finish within
// milliseconds, and a pass costs one statement per tenant with one open.
const busyInterval = 100 * time.Millisecond

// RunDriver drives open evaluations until ctx ends: every Interval, and
// every busyInterval while some are open.
func (s *Service) RunDriver(ctx context.Context, db *sql.DB) {
	open := 0
	wait := func() time.Duration {
		busy := open > 0
		open = 0 // a pass that does not run (another worker holds the job) finds none
		if busy {
			return min(s.o.Interval, busyInterval)
		}
		return s.o.Interval
	}
	store.RunSingleton(ctx, db, DriverName, s.log, wait, func(ctx context.Context) error {
		var err error
		open, err = s.Drive(ctx)
		return err
	})
}

// Drive makes one pass over every open evaluation of every tenant that
// has one and returns how many tenants had one. Tests and the benchmark
// call it directly.
func (s *Service) Drive(ctx context.Context) (int, error) {
	tenants, err := store.TenantIDsOf(ctx, s.o.Client, store.TenantsEvaluating)
	if err != nil {
		return 0, err
	}
	return len(tenants), store.EachTenant(ctx, tenants, func(tid string) error { return s.driveTenant(ctx, tid) })
}

func (s *Service) driveTenant(ctx context.Context, tenantID string) error {
	var open []string
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		var err error
		open, err = ent.FromContext(ctx).Evaluation.Query().
			Where(evaluation.FinishedAtIsNil()).Order(ent.Asc(evaluation.FieldCreatedAt)).IDs(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, id := range open {
		// One transaction per evaluation: one that fails does not hold the
		// others back.
		vctx := viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: subjectPrefix + id, System: true})
		var judge []judgeTask
		if err := store.InTenant(vctx, s.o.Client, func(ctx context.Context) error {
			var err error
			judge, err = s.step(ctx, tenantID, id)
			return err
		}); err != nil {
			return fmt.Errorf("evaluation %s: %w", id, err)
		}
		// Judge calls are made after the pass committed, outside any
		// transaction (judge.go).
		s.runJudges(ctx, judge)
	}
	return nil
}

// runMeasure is a run as an example reads it.
type runMeasure struct {
	r      *ent.Run
	tokens int64
}

func (m runMeasure) durationMs() int64 {
	if m.r.FinishedAt == nil {
		return 0
	}
	from := m.r.CreatedAt
	if m.r.StartedAt != nil {
		from = *m.r.StartedAt
	}
	return m.r.FinishedAt.Sub(from).Milliseconds()
}

func (m runMeasure) output() map[string]any {
	if len(m.r.Output) == 0 {
		return nil
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(m.r.Output))
	if d.Decode(&v) != nil || v == nil {
		return nil
	}
	if mv, ok := v.(map[string]any); ok {
		return mv
	}
	return map[string]any{"value": v} // a scalar or list output, wrapped for the Map field
}

func measureRuns(ctx context.Context, c *ent.Client, ids []string) (map[string]runMeasure, error) {
	out := map[string]runMeasure{}
	if len(ids) == 0 {
		return out, nil
	}
	list, err := c.Run.Query().Where(run.IDIn(ids...)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range list {
		out[r.ID] = runMeasure{r: r}
	}
	var sums []struct {
		RunID string `json:"run_id"`
		In    int64  `json:"in"`
		Out   int64  `json:"out"`
	}
	err = c.ModelCall.Query().Where(modelcall.RunIDIn(ids...)).GroupBy(modelcall.FieldRunID).
		Aggregate(ent.As(ent.Sum(modelcall.FieldInputTokens), "in"), ent.As(ent.Sum(modelcall.FieldOutputTokens), "out")).Scan(ctx, &sums)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	for _, t := range sums {
		if m, ok := out[t.RunID]; ok {
			m.tokens = t.In + t.Out
			out[t.RunID] = m
		}
	}
	return out, nil
}

// refused reports whether a replay was refused for what it is (its input,
// its source run) rather than failing for an outage: such an error comes
// from a check, not a failed statement, so the transaction goes on.
func refused(err error) bool {
	if err == nil {
		return false
	}
	switch errs.CodeOf(err) {
	case errs.Validation, errs.NotFound, errs.Conflict:
		return true
	}
	return ent.IsNotFound(err)
}

func finished(r *ent.Run) bool {
	return r.Status == run.StatusSucceeded || r.Status == run.StatusFailed || r.Status == run.StatusCancelled
}

// step moves one evaluation on, in the tenant transaction in ctx.
// It returns the examples whose JUDGE scorers are to be asked.
func (s *Service) step(ctx context.Context, tenantID, id string) ([]judgeTask, error) {
	c := ent.FromContext(ctx)
	ev, err := c.Evaluation.Query().Where(evaluation.ID(id)).ForUpdate().Only(ctx)
	if err != nil {
		return nil, err
	}
	if ev.Status != evaluation.StatusQueued && ev.Status != evaluation.StatusRunning {
		return nil, nil
	}
	var scorers []Scorer
	if err := fromMap(ev.Scorers, &scorers); err != nil {
		return nil, err
	}
	judges := judgeScorers(scorers)
	var toJudge []judgeTask
	running, err := c.EvaluationExample.Query().
		Where(evaluationexample.EvaluationID(id), evaluationexample.StatusEQ(evaluationexample.StatusRunning)).All(ctx)
	if err != nil {
		return nil, err
	}
	var want []string
	for _, x := range running {
		want = append(want, x.SourceRunID, *x.CandidateRunID)
	}
	ms, err := measureRuns(ctx, c, want)
	if err != nil {
		return nil, err
	}
	changed := ev.Status == evaluation.StatusQueued
	spent, done := ev.SpentMicroUsd, ev.Done
	inFlight := 0
	for _, x := range running {
		cand, ok := ms[*x.CandidateRunID]
		if !ok || !finished(cand.r) {
			inFlight++
			continue
		}
		base := ms[x.SourceRunID]
		if len(judges) > 0 && x.Judgements == nil && cand.r.Status == run.StatusSucceeded {
			toJudge = append(toJudge, judgeTask{tenantID: tenantID, environmentID: ev.EnvironmentID, exampleID: x.ID,
				candidateFirst: candidateFirst(ev.ID, x.Position), baseline: unwrap(base.output()), candidate: unwrap(cand.output()), scorers: judges})
			inFlight++
			continue
		}
		judged, err := s.judge(ctx, c, x, base, cand, scorers)
		if err != nil {
			return nil, err
		}
		spent += cand.r.CostMicroUsd + judged
		done++
		changed = true
	}
	u := c.Evaluation.UpdateOne(ev).SetStatus(evaluation.StatusRunning).SetSpentMicroUsd(spent).SetDone(done)
	if ev.BudgetMicroUsd != nil && spent >= *ev.BudgetMicroUsd {
		if err := u.Exec(ctx); err != nil {
			return nil, err
		}
		ev.SpentMicroUsd, ev.Done = spent, done
		_, err := s.finish(ctx, c, tenantID, ev, evaluation.StatusAbortedBudget,
			fmt.Sprintf("budget spent: %d of %d micro-USD", spent, *ev.BudgetMicroUsd))
		return nil, err
	}
	if free := ev.Concurrency - inFlight; free > 0 {
		next, err := c.EvaluationExample.Query().
			Where(evaluationexample.EvaluationID(id), evaluationexample.StatusEQ(evaluationexample.StatusPending)).
			Order(ent.Asc(evaluationexample.FieldPosition)).Limit(free).All(ctx)
		if err != nil {
			return nil, err
		}
		for _, x := range next {
			r, err := s.o.Runs.StartSandboxReplay(ctx, c, x.SourceRunID, ev.CandidateVersionID)
			if refused(err) {
				// This run cannot be replayed on the candidate (its input
				// does not fit the candidate's schema, it is gone): the
				// example is an ERROR, the others go on.
				if err := c.EvaluationExample.UpdateOne(x).SetStatus(evaluationexample.StatusDone).
					SetVerdict(evaluationexample.VerdictError).SetMessage("cannot replay " + x.SourceRunID + " on the candidate: " + err.Error()).
					SetUpdatedAt(s.now()).Exec(ctx); err != nil {
					return nil, err
				}
				done++
				u.SetDone(done)
				changed = true
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("replay %s: %w", x.SourceRunID, err)
			}
			if err := c.EvaluationExample.UpdateOne(x).SetCandidateRunID(r.ID).SetStatus(evaluationexample.StatusRunning).
				SetUpdatedAt(s.now()).Exec(ctx); err != nil {
				return nil, err
			}
			inFlight++
			changed = true
		}
	}
	if inFlight == 0 {
		if err := u.Exec(ctx); err != nil {
			return nil, err
		}
		ev.SpentMicroUsd, ev.Done = spent, done
		_, err := s.finish(ctx, c, tenantID, ev, evaluation.StatusCompleted, "")
		return nil, err
	}
	if !changed {
		return toJudge, nil
	}
	sum, err := s.summary(ctx, c, ev, false)
	if err != nil {
		return nil, err
	}
	if err := u.SetSummary(toMap(sum)).SetUpdatedAt(s.now()).Exec(ctx); err != nil {
		return nil, err
	}
	s.publishAfterCommit(ctx, tenantID, id, string(evaluation.StatusRunning))
	return toJudge, nil
}

// judge records a finished example: both outputs, their diff, the scores
// and the verdict, each side's cost, tokens and duration.
// It returns what its JUDGE scorers cost.
func (s *Service) judge(ctx context.Context, c *ent.Client, x *ent.EvaluationExample, base, cand runMeasure, scorers []Scorer) (int64, error) {
	u := c.EvaluationExample.UpdateOne(x).SetStatus(evaluationexample.StatusDone).SetUpdatedAt(s.now()).
		SetCandidateCostMicroUsd(cand.r.CostMicroUsd).SetCandidateTokens(cand.tokens).SetCandidateDurationMs(cand.durationMs())
	var bout, cout map[string]any
	if base.r != nil {
		bout = base.output()
		u.SetBaselineCostMicroUsd(base.r.CostMicroUsd).SetBaselineTokens(base.tokens).SetBaselineDurationMs(base.durationMs())
		if bout != nil {
			u.SetBaselineOutput(bout)
		}
	}
	var verdict string
	var cost int64
	switch {
	case cand.r.Status == run.StatusSucceeded:
		cout = cand.output()
		if cout != nil {
			u.SetCandidateOutput(cout)
		}
		var bv, cv any = unwrap(bout), unwrap(cout)
		var judgements []Judgement
		if err := fromMap(x.Judgements, &judgements); err != nil {
			return 0, err
		}
		scores := make([]Score, 0, len(scorers))
		for i, sc := range scorers {
			if sc.Kind != ScorerJudge {
				scores = append(scores, sc.score(bv, cv))
				continue
			}
			var jd *Judgement
			for k := range judgements {
				if judgements[k].Scorer == i {
					jd = &judgements[k]
				}
			}
			sj := judgeScore(jd)
			cost += sj.CostMicroUSD
			scores = append(scores, sj)
		}
		verdict = verdictOf(scores)
		u.SetScores(toMaps(scores)).SetDiff(diff(bv, cv, "", []map[string]any{}))
	case cand.r.ErrorMessage != nil && strings.Contains(*cand.r.ErrorMessage, runs.UnrecordedPrefix):
		verdict = VerdictInconclusive
		u.SetMessage(*cand.r.ErrorMessage)
	default:
		verdict = VerdictError
		msg := "the candidate's replay " + string(cand.r.Status)
		if cand.r.ErrorMessage != nil {
			msg += ": " + *cand.r.ErrorMessage
		}
		u.SetMessage(msg)
	}
	return cost, u.SetVerdict(evaluationexample.Verdict(verdict)).Exec(ctx)
}

// unwrap undoes output()'s wrapping of a scalar output.
func unwrap(m map[string]any) any {
	if v, ok := m["value"]; ok && len(m) == 1 {
		return v
	}
	if m == nil {
		return nil
	}
	return m
}

// summary recomputes an evaluation's summary from its finished examples
// and the workflow's live runs of the last 30 days in the environment.
func (s *Service) summary(ctx context.Context, c *ent.Client, ev *ent.Evaluation, final bool) (Summary, error) {
	list, err := c.EvaluationExample.Query().
		Where(evaluationexample.EvaluationID(ev.ID), evaluationexample.StatusEQ(evaluationexample.StatusDone)).All(ctx)
	if err != nil {
		return Summary{}, err
	}
	ms := make([]measure, 0, len(list))
	for _, x := range list {
		m := measure{baseCost: x.BaselineCostMicroUsd, candCost: x.CandidateCostMicroUsd, baseTokens: x.BaselineTokens,
			candTokens: x.CandidateTokens, baseMs: x.BaselineDurationMs, candMs: x.CandidateDurationMs}
		if x.Verdict != nil {
			m.verdict = string(*x.Verdict)
		}
		ms = append(ms, m)
	}
	// The 30 days' run count is read once while the evaluation runs (the
	// summary is recomputed on every pass) and again when it ends.
	var monthly int64
	var prev Summary
	if !final && fromMap(ev.Summary, &prev) == nil && prev.MonthlyRuns > 0 {
		monthly = prev.MonthlyRuns
	} else {
		n, err := c.Run.Query().Where(run.WorkflowID(ev.WorkflowID), run.EnvironmentID(ev.EnvironmentID), run.ModeEQ(run.ModeLive),
			run.CreatedAtGTE(s.now().Add(-30*24*time.Hour))).Count(ctx)
		if err != nil {
			return Summary{}, err
		}
		monthly = int64(n)
	}
	return summarize(ms, monthly), nil
}

// finish ends an open evaluation with status: examples not finished are
// skipped, the summary is final, the tenant's count of open evaluations
// drops, evaluation.completed goes to webhooks and subscribers hear of it.
func (s *Service) finish(ctx context.Context, c *ent.Client, tenantID string, ev *ent.Evaluation, status evaluation.Status, message string) (*ent.Evaluation, error) {
	now := s.now()
	// Replays still running are cancelled (as the evaluation, whoever
	// stopped it): nothing reads their results any more.
	inFlight, err := c.EvaluationExample.Query().
		Where(evaluationexample.EvaluationID(ev.ID), evaluationexample.StatusEQ(evaluationexample.StatusRunning)).All(ctx)
	if err != nil {
		return nil, err
	}
	sys := viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: subjectPrefix + ev.ID, System: true})
	for _, x := range inFlight {
		if x.CandidateRunID == nil {
			continue
		}
		if _, err := s.o.Runs.CancelRun(sys, *x.CandidateRunID); err != nil && errs.CodeOf(err) != errs.Conflict {
			return nil, fmt.Errorf("cancel replay %s: %w", *x.CandidateRunID, err)
		}
	}
	if _, err := c.EvaluationExample.Update().
		Where(evaluationexample.EvaluationID(ev.ID), evaluationexample.StatusIn(evaluationexample.StatusPending, evaluationexample.StatusRunning)).
		SetStatus(evaluationexample.StatusSkipped).SetUpdatedAt(now).Save(ctx); err != nil {
		return nil, err
	}
	sum, err := s.summary(ctx, c, ev, true)
	if err != nil {
		return nil, err
	}
	u := c.Evaluation.UpdateOne(ev).SetStatus(status).SetSummary(toMap(sum)).SetFinishedAt(now).SetUpdatedAt(now)
	if message != "" {
		u.SetMessage(message)
	}
	ev, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	if err := c.Tenant.Update().Where(tenant.ID(tenantID)).AddOpenEvaluations(-1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count open evaluations: %w", err)
	}
	data := map[string]any{"evaluationID": ev.ID, "workflowID": ev.WorkflowID, "environmentID": ev.EnvironmentID,
		"baselineVersionID": ev.BaselineVersionID, "candidateVersionID": ev.CandidateVersionID, "status": string(ev.Status),
		"total": ev.Total, "done": ev.Done, "spentMicroUSD": ev.SpentMicroUsd, "summary": toMap(sum)}
	if s.o.Events != nil {
		if _, err := s.o.Events.RecordEvent(ctx, c, tenantID, webhook.Event{Type: eventtype.EvaluationCompleted, Data: data}, now); err != nil {
			return nil, err
		}
	}
	s.publishAfterCommit(ctx, tenantID, ev.ID, string(ev.Status))
	return ev, nil
}

func (s *Service) publishAfterCommit(ctx context.Context, tenantID, id, status string) {
	if s.o.Publisher == nil {
		return
	}
	store.AfterCommit(ctx, func() { s.o.Publisher.PublishEvaluation(context.WithoutCancel(ctx), tenantID, id, status) })
}
