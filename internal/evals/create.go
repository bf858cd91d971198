package evals

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/evaluation"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Limits of an evaluation.
const (
	DefaultDatasetSize = 50
	MaxDatasetSize     = 1000
	DefaultConcurrency = 4
	MaxConcurrency     = 32
)

// Dataset chooses the source runs.
type Dataset struct {
	RunIDs   []string
	Last     *int
	Status   *run.Status
	From, To *time.Time
}

// Input is what evaluateVersion takes.
type Input struct {
	WorkflowID         string
	EnvironmentID      *string
	CandidateVersionID *string
	ModelOverrides     []ModelOverride
	Dataset            *Dataset
	Scorers            []Scorer
	RecordedOnly       bool
	Concurrency        *int
	BudgetMicroUSD     *int64
}

// overrideParams are the llm step parameters an override may set.
var overrideParams = []string{"maxTokens", "temperature", "topP", "seed"}

// Evaluate validates the input, freezes the dataset and creates the
// evaluation with one example per source run; the worker's driver runs
// it. Editors only. Bad input is VALIDATION naming the field, nothing
// written.
func (s *Service) Evaluate(ctx context.Context, in Input) (*ent.Evaluation, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if _, err := c.Workflow.Get(ctx, in.WorkflowID); ent.IsNotFound(err) {
		return nil, errs.Invalid("input.workflowID", "no such workflow")
	} else if err != nil {
		return nil, err
	}
	var env *ent.Environment
	if in.EnvironmentID != nil {
		env, err = c.Environment.Get(ctx, *in.EnvironmentID)
		if ent.IsNotFound(err) {
			return nil, errs.Invalid("input.environmentID", "no such environment")
		}
	} else {
		env, err = c.Environment.Query().Where(environment.KindEQ(environment.KindProduction)).Order(ent.Asc(environment.FieldCreatedAt)).First(ctx)
		if ent.IsNotFound(err) {
			return nil, errs.Invalid("input.environmentID", "the tenant has no production environment; name one")
		}
	}
	if err != nil {
		return nil, err
	}
	if !access.InScope(v, env.ID) {
		return nil, errs.Invalid("input.environmentID", "no such environment")
	}
	dep, err := c.Deployment.Query().Where(deployment.WorkflowID(in.WorkflowID), deployment.EnvironmentID(env.ID), deployment.Active(true)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.Invalid("input.environmentID", "no version of this workflow is deployed in this environment: there is no baseline")
	}
	if err != nil {
		return nil, err
	}
	baseline := dep.VersionID
	candidate := baseline
	if in.CandidateVersionID != nil {
		wv, err := c.WorkflowVersion.Get(ctx, *in.CandidateVersionID)
		switch {
		case ent.IsNotFound(err):
			return nil, errs.Invalid("input.candidateVersionID", "no such version")
		case err != nil:
			return nil, err
		case wv.WorkflowID != in.WorkflowID:
			return nil, errs.Invalid("input.candidateVersionID", "belongs to another workflow")
		case wv.Status != workflowversion.StatusPublished:
			return nil, errs.Invalid("input.candidateVersionID", "is a draft; publish it first")
		}
		candidate = wv.ID
	} else if len(in.ModelOverrides) == 0 {
		return nil, errs.Invalid("input.candidateVersionID", "give a candidate version, or model overrides of the baseline")
	}
	def, err := s.o.Runs.DefinitionOf(ctx, c, candidate)
	if err != nil {
		return nil, err
	}
	if err := checkOverrides(ctx, c, env.ID, def, in.ModelOverrides); err != nil {
		return nil, err
	}
	if len(in.Scorers) == 0 {
		in.Scorers = []Scorer{{Kind: ScorerExact}}
	}
	if err := checkScorers(in.Scorers); err != nil {
		return nil, err
	}
	if err := checkJudgeCredentials(ctx, c, env.ID, in.Scorers); err != nil {
		return nil, err
	}
	conc := DefaultConcurrency
	if in.Concurrency != nil {
		if *in.Concurrency < 1 || *in.Concurrency > MaxConcurrency {
			return nil, errs.Invalid("input.concurrency", "must be 1 to %d", MaxConcurrency)
		}
		conc = *in.Concurrency
	}
	if in.BudgetMicroUSD != nil && *in.BudgetMicroUSD <= 0 {
		return nil, errs.Invalid("input.budgetMicroUSD", "must be positive")
	}
	sources, err := datasetRuns(ctx, c, in.WorkflowID, env.ID, in.Dataset)
	if err != nil {
		return nil, err
	}
	now := s.now()
	ev, err := c.Evaluation.Create().SetID(ids.New(ids.Evaluation)).SetCreatedAt(now).SetUpdatedAt(now).
		SetWorkflowID(in.WorkflowID).SetEnvironmentID(env.ID).SetBaselineVersionID(baseline).SetCandidateVersionID(candidate).
		SetModelOverrides(toMaps(in.ModelOverrides)).SetScorers(toMaps(in.Scorers)).SetRecordedOnly(in.RecordedOnly).
		SetConcurrency(conc).SetNillableBudgetMicroUsd(in.BudgetMicroUSD).SetTotal(len(sources)).SetCreatedBy(v.Subject).
		SetSummary(toMap(summarize(nil, 0))).
		Save(ctx)
	if err != nil {
		return nil, err
	}
	bulk := make([]*ent.EvaluationExampleCreate, len(sources))
	for i, id := range sources {
		bulk[i] = c.EvaluationExample.Create().SetID(ids.New(ids.EvaluationExample)).SetCreatedAt(now).SetUpdatedAt(now).
			SetEvaluationID(ev.ID).SetPosition(i).SetSourceRunID(id)
	}
	if err := c.EvaluationExample.CreateBulk(bulk...).Exec(ctx); err != nil {
		return nil, err
	}
	// The driver visits tenants with open evaluations only (bookkeeping
	// only Sluice writes, like sla_version).
	if err := c.Tenant.Update().Where(tenant.ID(v.TenantID)).AddOpenEvaluations(1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count open evaluation: %w", err)
	}
	return ev, audit.Record(ctx, c, "evaluation.create", "Evaluation", ev.ID, map[string]any{
		"workflowID": in.WorkflowID, "environmentID": env.ID, "baselineVersionID": baseline, "candidateVersionID": candidate,
		"examples": len(sources), "recordedOnly": in.RecordedOnly})
}

// Cancel stops an open evaluation: examples not started are skipped, the
// summary covers those finished.
func (s *Service) Cancel(ctx context.Context, id string) (*ent.Evaluation, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	ev, err := c.Evaluation.Query().Where(evaluation.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) || err == nil && !access.InScope(v, ev.EnvironmentID) {
		return nil, errs.NotFoundf("evaluation", id)
	}
	if err != nil {
		return nil, err
	}
	if ev.Status != evaluation.StatusQueued && ev.Status != evaluation.StatusRunning {
		return nil, errs.E(errs.Conflict, "evaluation %s is already %s", id, ev.Status)
	}
	ev, err = s.finish(ctx, c, v.TenantID, ev, evaluation.StatusCancelled, "cancelled by "+v.Subject)
	if err != nil {
		return nil, err
	}
	return ev, audit.Record(ctx, c, "evaluation.cancel", "Evaluation", id, nil)
}

func checkOverrides(ctx context.Context, c *ent.Client, envID string, def *definition.Definition, list []ModelOverride) error {
	for i, o := range list {
		path := fmt.Sprintf("input.modelOverrides[%d]", i)
		if o.StepID != "*" {
			st, ok := def.StepByID(o.StepID)
			if !ok {
				return errs.Invalid(path+".stepID", "the candidate has no step %q", o.StepID)
			}
			if st.Type != definition.StepLLM {
				return errs.Invalid(path+".stepID", "step %q is a %s step, not llm", o.StepID, st.Type)
			}
		}
		if o.Credential == nil && o.Model == nil && len(o.Params) == 0 {
			return errs.Invalid(path, "override a credential, a model or params")
		}
		if o.Model != nil && (*o.Model == "" || len(*o.Model) > 200) {
			return errs.Invalid(path+".model", "must be 1 to 200 characters")
		}
		if o.Credential != nil {
			n, err := c.Credential.Query().Where(credential.EnvironmentID(envID), credential.Name(*o.Credential)).Count(ctx)
			if err != nil {
				return err
			}
			if n == 0 {
				return errs.Invalid(path+".credential", "no credential %q in the environment", *o.Credential)
			}
		}
		for k, val := range o.Params {
			if !slices.Contains(overrideParams, k) {
				return errs.Invalid(path+".params."+k, "unknown parameter; one of %v", overrideParams)
			}
			if _, ok := number(val); !ok {
				return errs.Invalid(path+".params."+k, "must be a number")
			}
		}
	}
	return nil
}

func checkScorers(list []Scorer) error {
	for i, sc := range list {
		path := fmt.Sprintf("input.scorers[%d]", i)
		switch sc.Kind {
		case ScorerExact, ScorerJSONFields:
		case ScorerCEL:
			if sc.Expression == "" {
				return errs.Invalid(path+".expression", "a CEL scorer needs an expression")
			}
			if _, err := compileCEL(sc.Expression); err != nil {
				return errs.Invalid(path+".expression", "%v", err)
			}
		case ScorerNumeric:
			if sc.Tolerance < 0 {
				return errs.Invalid(path+".tolerance", "must not be negative")
			}
		case ScorerJudge:
			switch {
			case sc.Credential == "":
				return errs.Invalid(path+".credential", "a JUDGE scorer needs a credential (openai or anthropic) of the evaluation's environment")
			case sc.Model == "":
				return errs.Invalid(path+".model", "a JUDGE scorer needs a model")
			case sc.MaxTokens < 0 || sc.MaxTokens > 4000:
				return errs.Invalid(path+".maxTokens", "must be 1 to 4000")
			case len(sc.Criteria) > 4000:
				return errs.Invalid(path+".criteria", "must be at most 4000 characters")
			}
		default:
			return errs.Invalid(path+".kind", "unknown scorer %q", sc.Kind)
		}
	}
	return nil
}

// checkJudgeCredentials refuses a JUDGE scorer whose credential is not an
// openai or anthropic credential of the environment.
func checkJudgeCredentials(ctx context.Context, c *ent.Client, envID string, list []Scorer) error {
	for i, sc := range list {
		if sc.Kind != ScorerJudge {
			continue
		}
		path := fmt.Sprintf("input.scorers[%d].credential", i)
		cr, err := c.Credential.Query().Where(credential.EnvironmentID(envID), credential.Name(sc.Credential)).Only(ctx)
		if ent.IsNotFound(err) {
			return errs.Invalid(path, "no credential %q in the environment", sc.Credential)
		}
		if err != nil {
			return err
		}
		if cr.Type != credential.TypeOpenai && cr.Type != credential.TypeAnthropic {
			return errs.Invalid(path, "credential %q is of type %s; a judge needs openai or anthropic", sc.Credential, cr.Type)
		}
	}
	return nil
}

// datasetRuns freezes the dataset: source run ids in order.
func datasetRuns(ctx context.Context, c *ent.Client, workflowID, envID string, d *Dataset) ([]string, error) {
	if d == nil {
		d = &Dataset{}
	}
	if len(d.RunIDs) > 0 {
		if len(d.RunIDs) > MaxDatasetSize {
			return nil, errs.Invalid("input.dataset.runIDs", "at most %d runs", MaxDatasetSize)
		}
		found, err := c.Run.Query().Where(run.IDIn(d.RunIDs...)).All(ctx)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]*ent.Run, len(found))
		for _, r := range found {
			byID[r.ID] = r
		}
		seen := map[string]bool{}
		for i, id := range d.RunIDs {
			path := fmt.Sprintf("input.dataset.runIDs[%d]", i)
			r, ok := byID[id]
			switch {
			case !ok:
				return nil, errs.Invalid(path, "no such run")
			case r.WorkflowID != workflowID:
				return nil, errs.Invalid(path, "is a run of another workflow")
			case r.FinishedAt == nil:
				return nil, errs.Invalid(path, "has not finished")
			case seen[id]:
				return nil, errs.Invalid(path, "appears twice")
			}
			seen[id] = true
		}
		return d.RunIDs, nil
	}
	n := DefaultDatasetSize
	if d.Last != nil {
		if *d.Last < 1 || *d.Last > MaxDatasetSize {
			return nil, errs.Invalid("input.dataset.last", "must be 1 to %d", MaxDatasetSize)
		}
		n = *d.Last
	}
	status := run.StatusSucceeded
	if d.Status != nil {
		if *d.Status != run.StatusSucceeded && *d.Status != run.StatusFailed {
			return nil, errs.Invalid("input.dataset.status", "must be SUCCEEDED or FAILED (finished runs)")
		}
		status = *d.Status
	}
	q := c.Run.Query().Where(run.WorkflowID(workflowID), run.EnvironmentID(envID), run.StatusEQ(status), run.ModeEQ(run.ModeLive))
	if d.From != nil {
		q.Where(run.CreatedAtGTE(*d.From))
	}
	if d.To != nil {
		if d.From != nil && !d.To.After(*d.From) {
			return nil, errs.Invalid("input.dataset.to", "must be after from")
		}
		q.Where(run.CreatedAtLT(*d.To))
	}
	list, err := q.Order(ent.Desc(run.FieldCreatedAt), ent.Desc(run.FieldID)).Limit(n).IDs(ctx)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, errs.Invalid("input.dataset", "no runs match: nothing to evaluate")
	}
	slices.Reverse(list) // oldest first
	return list, nil
}

func toMaps[T any](list []T) []map[string]any {
	out := make([]map[string]any, 0, len(list))
	for _, x := range list {
		out = append(out, toMap(x))
	}
	return out
}

func toMap(x any) map[string]any {
	b, _ := json.Marshal(x)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

func fromMap(m any, into any) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, into)
}

// Decode converts a stored JSON value (a map or a list of maps) into a
// typed one.
func Decode(stored any, into any) error { return fromMap(stored, into) }

// Query is the viewer's evaluations (evaluations), of one workflow when
// workflowID is set; environment-scoped keys see their environment's.
func (s *Service) Query(ctx context.Context, workflowID *string) (*ent.EvaluationQuery, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor, viewer.RoleOperator, viewer.RoleViewer)
	if err != nil {
		return nil, err
	}
	q := c.Evaluation.Query()
	if workflowID != nil {
		q.Where(evaluation.WorkflowID(*workflowID))
	}
	if v.EnvironmentID != "" {
		q.Where(evaluation.EnvironmentID(v.EnvironmentID))
	}
	return q, nil
}
