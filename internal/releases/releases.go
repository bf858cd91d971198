// Package releases owns releases: a candidate version of a workflow takes a
// growing share of the workflow's new runs in an environment, step by step,
// while an analysis compares it with the stable version (the one deployed)
// over the same window; a breach rolls it back, a healthy candidate is
// promoted (it becomes the deployment). It also owns rollbackDeployment.
// The run state machine routes new runs itself (internal/runs reads the
// active release in the statement that reads the deployment, and hashes
// with internal/releasespec); this package never writes runs.
package releases

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/releasespec"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// EventRecorder writes a tenant event's webhook deliveries in the caller's
// transaction (webhook.Service.RecordEvent).
type EventRecorder interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// Gate guards releases into protected environments (internal/protection):
// CheckRelease refuses one in a freeze window or without a passing
// evaluation of the candidate and reports whether it waits for approvals;
// RequestRelease opens the approval request of a release that waits.
type Gate interface {
	CheckRelease(ctx context.Context, c *ent.Client, v *viewer.Viewer, wv *ent.WorkflowVersion, env *ent.Environment) (wait bool, err error)
	RequestRelease(ctx context.Context, c *ent.Client, v *viewer.Viewer, r *ent.Release) error
	// ReleaseEnded cancels the approval request of a release that ended
	// while it waited for approvals.
	ReleaseEnded(ctx context.Context, c *ent.Client, r *ent.Release) error
}

// Options configure a Service.
type Options struct {
	Gate   Gate        // protected environments; nil protects none
	Client *ent.Client // the app role's pool, for the analysis's transactions
	Events EventRecorder
	Log    *slog.Logger
	// Now is the clock. If nil, the UTC wall clock at microseconds.
	Now func() time.Time
	// Interval is how often releases are analysed. If zero, 30s
	// (SLUICE_RELEASE_ANALYSIS_INTERVAL).
	Interval time.Duration
	// Incidents opens the incident of an automatic rollback (internal/sla);
	// nil: none is opened.
	Incidents Incidents
}

// Incidents opens incidents about releases, in the caller's tenant
// transaction; internal/sla implements it.
type Incidents interface {
	ReleaseRolledBack(ctx context.Context, c *ent.Client, tenantID, releaseID, workflowID, environmentID string, details map[string]any, now time.Time) error
}

// Service is the releases room's door.
type Service struct {
	o   Options
	log *slog.Logger
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	return &Service{o: o, log: o.Log}
}

// Limits of a release's definition.
const (
	maxSteps    = 20
	maxHoldFor  = 30 * 24 * time.Hour
	keepFigures = 200
)

// CreateInput is what createRelease takes.
type CreateInput struct {
	WorkflowID, EnvironmentID, CandidateVersionID string
	Steps                                         []releasespec.Step
	Analysis                                      *releasespec.Analysis
}

func validate(in *CreateInput) error {
	var problems []errs.Problem
	add := func(path, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if len(in.Steps) == 0 {
		add("input.steps", "at least one step is needed")
	}
	if len(in.Steps) > maxSteps {
		add("input.steps", "at most %d steps", maxSteps)
	}
	prev := 0
	for i, st := range in.Steps {
		p := "input.steps[" + strconv.Itoa(i) + "]"
		switch {
		case st.WeightPercent < 1 || st.WeightPercent > 100:
			add(p+".weightPercent", "must be between 1 and 100")
		case st.WeightPercent <= prev:
			add(p+".weightPercent", "must be greater than the previous step's (%d): weights strictly increase", prev)
		}
		prev = max(prev, st.WeightPercent)
		if st.HoldFor != "" {
			d, err := time.ParseDuration(st.HoldFor)
			if err != nil || d < 0 || d > maxHoldFor {
				add(p+".holdFor", "must be a duration such as 10m, at most 720h")
			}
		}
		if st.MinRuns < 0 {
			add(p+".minRuns", "must not be negative")
		}
	}
	if a := in.Analysis; a != nil {
		if a.MinRunsPerSide < 0 {
			add("input.analysis.minRunsPerSide", "must not be negative")
		}
		if a.MaxSuccessRateDrop < 0 || a.MaxSuccessRateDrop > 1 {
			add("input.analysis.maxSuccessRateDrop", "must be between 0 and 1")
		}
		if a.MaxP95IncreasePct != nil && *a.MaxP95IncreasePct < 0 {
			add("input.analysis.maxP95IncreasePct", "must not be negative")
		}
		if a.MaxCostIncreasePct != nil && *a.MaxCostIncreasePct < 0 {
			add("input.analysis.maxCostIncreasePct", "must not be negative")
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the release is not valid", problems)
	}
	return nil
}

// authorizeEnv checks the role (editor; admin for production, as deploys)
// and reads the environment in the viewer's scope.
func authorizeEnv(ctx context.Context, environmentID, path string) (*viewer.Viewer, *ent.Client, *ent.Environment, error) {
	return authorizeEnvTo(ctx, environmentID, path, false)
}

// authorizeEnvTo is authorizeEnv; request lets editors ask for a release
// in a production environment that requires approvals (it waits for them).
func authorizeEnvTo(ctx context.Context, environmentID, path string, request bool) (*viewer.Viewer, *ent.Client, *ent.Environment, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, nil, nil, err
	}
	env, err := control.EnvironmentByID(ctx, c, environmentID, path)
	if err != nil {
		return nil, nil, nil, err
	}
	if env.Kind == environment.KindProduction && !v.Has(viewer.RoleAdmin) && !(request && control.RequiresApprovals(env)) {
		return nil, nil, nil, errs.E(errs.Forbidden, "releases and deploys in production need the admin role")
	}
	return v, c, env, nil
}

// CreateRelease starts a release of a candidate version against the
// version deployed now. It starts progressing at its first step, or, in a
// protected environment that requires approvals, waits in
// PENDING_APPROVAL until they are in (internal/protection).
func (s *Service) CreateRelease(ctx context.Context, in CreateInput) (*ent.Release, error) {
	if err := validate(&in); err != nil {
		return nil, err
	}
	v, c, env, err := authorizeEnvTo(ctx, in.EnvironmentID, "input.environmentID", true)
	if err != nil {
		return nil, err
	}
	if _, err := c.Workflow.Get(ctx, in.WorkflowID); ent.IsNotFound(err) {
		return nil, &errs.Error{Code: errs.NotFound, Message: "workflow " + strconv.Quote(in.WorkflowID) + " not found",
			Problems: []errs.Problem{{Path: "input.workflowID", Message: "not found"}}}
	} else if err != nil {
		return nil, err
	}
	wv, err := c.WorkflowVersion.Get(ctx, in.CandidateVersionID)
	if ent.IsNotFound(err) {
		return nil, &errs.Error{Code: errs.NotFound, Message: "workflow version " + strconv.Quote(in.CandidateVersionID) + " not found",
			Problems: []errs.Problem{{Path: "input.candidateVersionID", Message: "not found"}}}
	}
	if err != nil {
		return nil, err
	}
	if wv.WorkflowID != in.WorkflowID {
		return nil, errs.Invalid("input.candidateVersionID", "is a version of another workflow")
	}
	// The candidate will run in env as a deploy would: archived
	// environments, drafts, and missing credentials or variables refuse it.
	if err := control.CheckDeployable(ctx, c, wv, env, "input.candidateVersionID", "input.environmentID"); err != nil {
		return nil, err
	}
	dep, err := c.Deployment.Query().Where(deployment.WorkflowID(in.WorkflowID), deployment.EnvironmentID(env.ID), deployment.Active(true)).
		ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.Invalid("input.environmentID", "no version of this workflow is deployed in this environment: deploy one first (it is the release's stable side)")
	}
	if err != nil {
		return nil, err
	}
	if dep.VersionID == wv.ID {
		return nil, errs.Invalid("input.candidateVersionID", "is the version deployed now")
	}
	state, wait := release.StateProgressing, false
	if s.o.Gate != nil {
		if wait, err = s.o.Gate.CheckRelease(ctx, c, v, wv, env); err != nil {
			return nil, err
		}
		if wait {
			state = release.StatePendingApproval
		}
	}
	analysis := releasespec.Analysis{}
	if in.Analysis != nil {
		analysis = *in.Analysis
	}
	analysis = analysis.WithDefaults()
	now := s.o.Now()
	r, err := c.Release.Create().
		SetWorkflowID(in.WorkflowID).SetEnvironmentID(env.ID).
		SetStableVersionID(dep.VersionID).SetCandidateVersionID(wv.ID).
		SetState(state).SetSteps(in.Steps).SetAnalysis(analysis).
		SetStepIndex(0).SetWeightPercent(in.Steps[0].WeightPercent).SetStepStartedAt(now).
		SetCreatedBy(v.Subject).SetCreatedAt(now).SetUpdatedAt(now).
		Save(ctx)
	if ent.IsConstraintError(err) {
		return nil, errs.E(errs.Conflict, "a release of this workflow is already under way in %s", env.Name)
	}
	if err != nil {
		return nil, err
	}
	if wait {
		if err := s.o.Gate.RequestRelease(ctx, c, v, r); err != nil {
			return nil, err
		}
	}
	return r, s.record(ctx, c, r, eventtype.ReleaseStarted, "release.create", map[string]any{"stepIndex": 0, "weightPercent": r.WeightPercent})
}

// record writes a transition's audit entry and its tenant event.
func (s *Service) record(ctx context.Context, c *ent.Client, r *ent.Release, t eventtype.Type, action string, extra map[string]any) error {
	data := map[string]any{
		"releaseID": r.ID, "workflowID": r.WorkflowID, "environmentID": r.EnvironmentID,
		"stableVersionID": r.StableVersionID, "candidateVersionID": r.CandidateVersionID,
		"state": string(r.State), "stepIndex": r.StepIndex, "weightPercent": r.WeightPercent,
	}
	if r.Reason != nil {
		data["reason"] = *r.Reason
	}
	for k, v := range extra {
		data[k] = v
	}
	if err := audit.Record(ctx, c, action, "Release", r.ID, data); err != nil {
		return err
	}
	if s.o.Events == nil {
		return nil
	}
	_, err := s.o.Events.RecordEvent(ctx, c, r.TenantID, webhook.Event{Type: t, Data: data}, s.o.Now())
	return err
}

// operate authorizes a change of a release and locks it.
func (s *Service) operate(ctx context.Context, id string) (*viewer.Viewer, *ent.Client, *ent.Release, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := c.Release.Query().Where(release.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, nil, errs.NotFoundf("release", id)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if _, _, _, err := authorizeEnv(ctx, r.EnvironmentID, "id"); err != nil {
		if errs.CodeOf(err) == errs.NotFound {
			return nil, nil, nil, errs.NotFoundf("release", id)
		}
		return nil, nil, nil, err
	}
	return v, c, r, nil
}

func active(r *ent.Release) bool {
	return r.State == release.StateProgressing || r.State == release.StatePaused || r.State == release.StatePendingApproval
}

// PauseRelease holds a progressing release at its step: the weight stays,
// the analysis neither advances nor rolls it back.
func (s *Service) PauseRelease(ctx context.Context, id string) (*ent.Release, error) {
	_, c, r, err := s.operate(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.State != release.StateProgressing {
		return nil, errs.E(errs.Conflict, "only a progressing release can be paused; release %s is %s", id, r.State)
	}
	if r, err = r.Update().SetState(release.StatePaused).SetUpdatedAt(s.o.Now()).Save(ctx); err != nil {
		return nil, err
	}
	return r, s.record(ctx, c, r, eventtype.ReleasePaused, "release.pause", nil)
}

// ResumeRelease lets a paused release progress again from its step.
func (s *Service) ResumeRelease(ctx context.Context, id string) (*ent.Release, error) {
	_, c, r, err := s.operate(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.State != release.StatePaused {
		return nil, errs.E(errs.Conflict, "only a paused release can be resumed; release %s is %s", id, r.State)
	}
	if r, err = r.Update().SetState(release.StateProgressing).SetUpdatedAt(s.o.Now()).Save(ctx); err != nil {
		return nil, err
	}
	return r, s.record(ctx, c, r, eventtype.ReleaseResumed, "release.resume", nil)
}

// PromoteRelease makes the candidate the deployment now.
func (s *Service) PromoteRelease(ctx context.Context, id string) (*ent.Release, error) {
	v, c, r, err := s.operate(ctx, id)
	if err != nil {
		return nil, err
	}
	if !active(r) {
		return nil, errs.E(errs.Conflict, "release %s is already %s", id, r.State)
	}
	if r.State == release.StatePendingApproval {
		return nil, errs.E(errs.Conflict, "release %s waits for the approvals its environment requires (approvals of kind DEPLOYMENT); it cannot be promoted before", id)
	}
	return s.promote(ctx, c, v, r, "promoted by "+v.Subject)
}

func (s *Service) promote(ctx context.Context, c *ent.Client, v *viewer.Viewer, r *ent.Release, note string) (*ent.Release, error) {
	env, err := c.Environment.Get(ctx, r.EnvironmentID)
	if err != nil {
		return nil, err
	}
	now := s.o.Now()
	if err := control.CheckFreeze(env, now, "id"); err != nil {
		return nil, err // an automatic promotion waits for the window's end
	}
	dep, _, err := control.ActivateVersion(ctx, c, v, r.WorkflowID, env, r.CandidateVersionID, now)
	if err != nil {
		return nil, err
	}
	r, err = r.Update().SetState(release.StatePromoted).SetWeightPercent(100).SetFinishedAt(now).SetFinishedBy(v.Subject).SetUpdatedAt(now).Save(ctx)
	if err != nil {
		return nil, err
	}
	return r, s.record(ctx, c, r, eventtype.ReleasePromoted, "release.promote", map[string]any{"deploymentID": dep.ID, "note": note})
}

// RollbackRelease sends every new run to the stable version; candidate runs
// already started finish on the candidate.
func (s *Service) RollbackRelease(ctx context.Context, id string, reason *string) (*ent.Release, error) {
	v, c, r, err := s.operate(ctx, id)
	if err != nil {
		return nil, err
	}
	if !active(r) {
		return nil, errs.E(errs.Conflict, "release %s is already %s", id, r.State)
	}
	why := "rolled back by " + v.Subject
	if reason != nil && *reason != "" {
		why = *reason
	}
	return s.end(ctx, c, v, r, release.StateRolledBack, why)
}

// AbortRelease ends a release with no change to the deployment.
func (s *Service) AbortRelease(ctx context.Context, id string, reason *string) (*ent.Release, error) {
	v, c, r, err := s.operate(ctx, id)
	if err != nil {
		return nil, err
	}
	if !active(r) {
		return nil, errs.E(errs.Conflict, "release %s is already %s", id, r.State)
	}
	why := "aborted by " + v.Subject
	if reason != nil && *reason != "" {
		why = *reason
	}
	return s.end(ctx, c, v, r, release.StateAborted, why)
}

func (s *Service) end(ctx context.Context, c *ent.Client, v *viewer.Viewer, r *ent.Release, to release.State, reason string) (*ent.Release, error) {
	if len(reason) > 2000 {
		reason = reason[:2000]
	}
	now := s.o.Now()
	waited := r.State == release.StatePendingApproval
	r, err := r.Update().SetState(to).SetWeightPercent(0).SetReason(reason).SetFinishedAt(now).SetFinishedBy(v.Subject).SetUpdatedAt(now).Save(ctx)
	if err != nil {
		return nil, err
	}
	if waited && s.o.Gate != nil {
		if err := s.o.Gate.ReleaseEnded(ctx, c, r); err != nil {
			return nil, err
		}
	}
	t, action := eventtype.ReleaseRolledBack, "release.rollback"
	if to == release.StateAborted {
		t, action = eventtype.ReleaseAborted, "release.abort"
	}
	return r, s.record(ctx, c, r, t, action, nil)
}

// RollbackDeployment makes the version deployed before the current one
// current again, in one step.
func (s *Service) RollbackDeployment(ctx context.Context, environmentID, workflowID string) (*ent.Deployment, error) {
	v, c, env, err := authorizeEnv(ctx, environmentID, "environmentID")
	if err != nil {
		return nil, err
	}
	cur, err := c.Deployment.Query().Where(deployment.WorkflowID(workflowID), deployment.EnvironmentID(env.ID), deployment.Active(true)).
		ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.Invalid("workflowID", "no version of this workflow is deployed in this environment")
	}
	if err != nil {
		return nil, err
	}
	if cur.PreviousVersionID == nil {
		return nil, errs.Invalid("workflowID", "no version was deployed in this environment before the current one")
	}
	if r, err := c.Release.Query().Where(release.WorkflowID(workflowID), release.EnvironmentID(env.ID),
		release.StateIn(release.StatePendingApproval, release.StateProgressing, release.StatePaused)).First(ctx); err == nil {
		return nil, errs.E(errs.Conflict, "release %s of this workflow is %s in this environment; roll it back or abort it instead", r.ID, r.State)
	} else if !ent.IsNotFound(err) {
		return nil, err
	}
	dep, prev, err := control.ActivateVersion(ctx, c, v, workflowID, env, *cur.PreviousVersionID, s.o.Now())
	if err != nil {
		return nil, err
	}
	data := map[string]any{"workflowID": workflowID, "environmentID": env.ID, "versionID": dep.VersionID,
		"rolledBackVersionID": prev.VersionID, "deploymentID": dep.ID}
	if err := audit.Record(ctx, c, "deployment.rollback", "Deployment", dep.ID, data); err != nil {
		return nil, err
	}
	if s.o.Events != nil {
		if _, err := s.o.Events.RecordEvent(ctx, c, v.TenantID, webhook.Event{Type: eventtype.DeploymentRolledBack, Data: data}, s.o.Now()); err != nil {
			return nil, err
		}
	}
	return dep, nil
}
