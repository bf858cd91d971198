package runs

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tracing"
	"github.com/sluicehq/sluice/internal/viewer"
)

// maxIdempotencyKey bounds idempotency keys.
const maxIdempotencyKey = 255

// StartRunInput is what startRun takes.
type StartRunInput struct {
	WorkflowID     string
	EnvironmentID  string
	Input          map[string]any
	IdempotencyKey *string
	// Priority orders the run's steps among its tenant's held steps (fair
	// dispatch): 1 first to 5 last; if nil, DefaultPriority.
	Priority *int
}

// Run priorities (fair dispatch): 1 goes first, 5 last.
const (
	DefaultPriority = 3
	// ReplayPriority is a replay's priority when none is given: a replay
	// or a bulk operation must not hold back the runs users start.
	ReplayPriority = 5
)

// priorityOf validates a priority given at path; def when nil.
func priorityOf(p *int, def int, path string) (int, error) {
	if p == nil {
		return def, nil
	}
	if *p < 1 || *p > 5 {
		return 0, errs.Invalid(path, "must be 1 (first) to 5 (last), got %d", *p)
	}
	return *p, nil
}

// inputHash identifies a run input for idempotency: same key with the same
// hash is the same request.
func inputHash(input map[string]any) string {
	b, _ := json.Marshal(input) // map keys are sorted: stable
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// StartRun starts a run of the version deployed in the environment. With an
// idempotency key, the same key and input return the existing run and the
// same key with another input is CONFLICT.
func (e *Service) StartRun(ctx context.Context, in StartRunInput) (*ent.Run, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	// Every statement of a start reads or writes rows by a unique key
	// (TestStartRunKeepsCachedPlans): planned once per connection instead of
	// at every call, including the foreign-key checks of its inserts.
	defer store.CachedPlans(ctx)()
	if in.Input == nil {
		in.Input = map[string]any{}
	}
	priority, err := priorityOf(in.Priority, DefaultPriority, "input.priority")
	if err != nil {
		return nil, err
	}
	hash := inputHash(in.Input)
	if k := in.IdempotencyKey; k != nil {
		if *k == "" || len(*k) > maxIdempotencyKey {
			return nil, errs.Invalid("input.idempotencyKey", "must be 1 to %d characters", maxIdempotencyKey)
		}
		// Serialise starts with the same key so concurrent duplicates see
		// the first one instead of failing on the unique index.
		if _, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", v.TenantID+"/"+*k); err != nil {
			return nil, err
		}
		existing, err := c.Run.Query().Where(run.IdempotencyKey(*k)).Only(ctx)
		switch {
		case err == nil:
			if existing.InputHash != hash {
				return nil, errs.E(errs.Conflict, "idempotency key %q was used with a different input", *k)
			}
			if existing.WorkflowID != in.WorkflowID || existing.EnvironmentID != in.EnvironmentID {
				// Another request: never hand out a run of another workflow
				// or environment (an environment-scoped key must not see it).
				return nil, errs.E(errs.Conflict, "idempotency key %q was used for another workflow or environment", *k)
			}
			return existing, nil
		case !ent.IsNotFound(err):
			return nil, err
		}
	}
	// The deployment and the tenant's sla_version (under which SLA
	// policies are cached) in one round trip.
	// The environment's variables version (the set the run reads), whether
	// it is archived, and the active release of the workflow in the
	// environment (releaseSelect) come with the same statement.
	var deps []struct {
		VersionID   string         `json:"version_id"`
		SLAVersion  int64          `json:"sla_version"`
		VarsVersion int64          `json:"vars_version"`
		Archived    bool           `json:"archived"`
		Release     sql.NullString `json:"release"`
		Pause       *string        `json:"pause"`
		RunCap      *int           `json:"run_cap"`
		Concurrency *string        `json:"concurrency"`
	}
	err = c.Deployment.Query().
		Where(deployment.WorkflowID(in.WorkflowID), deployment.EnvironmentID(in.EnvironmentID), deployment.Active(true)).
		Modify(func(s *entsql.Selector) {
			s.Select(s.C(deployment.FieldVersionID))
			s.AppendSelectExprAs(entsql.Expr("(SELECT sla_version FROM tenants WHERE id = "+s.C(deployment.FieldTenantID)+")"), "sla_version")
			s.AppendSelectExprAs(entsql.Expr("(SELECT vars_version FROM environments WHERE id = "+s.C(deployment.FieldEnvironmentID)+")"), "vars_version")
			s.AppendSelectExprAs(entsql.Expr("(SELECT archived_at IS NOT NULL FROM environments WHERE id = "+s.C(deployment.FieldEnvironmentID)+")"), "archived")
			s.AppendSelectExprAs(entsql.Expr(releaseSelect(s.C(deployment.FieldTenantID), s.C(deployment.FieldWorkflowID), s.C(deployment.FieldEnvironmentID))), "release")
			s.AppendSelectExprAs(entsql.Expr(pauseSelect(s.C(deployment.FieldTenantID), s.C(deployment.FieldWorkflowID), s.C(deployment.FieldEnvironmentID))), "pause")
			s.AppendSelectExprAs(entsql.Expr("(SELECT max_concurrent_runs FROM tenants WHERE id = "+s.C(deployment.FieldTenantID)+")"), "run_cap")
			s.AppendSelectExprAs(entsql.Expr(envConcurrencySelect(s.C(deployment.FieldTenantID), s.C(deployment.FieldWorkflowID), s.C(deployment.FieldEnvironmentID))), "concurrency")
		}).Scan(ctx, &deps)
	if err == nil && len(deps) == 0 {
		if _, werr := c.Workflow.Get(ctx, in.WorkflowID); ent.IsNotFound(werr) {
			return nil, errs.NotFoundf("workflow", in.WorkflowID)
		}
		env, eerr := control.EnvironmentByID(ctx, c, in.EnvironmentID, "input.environmentID")
		if eerr != nil {
			return nil, eerr
		}
		if env.ArchivedAt != nil {
			return nil, control.ArchivedError(env, "input.environmentID", "new runs")
		}
		return nil, errs.Invalid("input.environmentID", "no version of this workflow is deployed in this environment")
	}
	if err != nil {
		return nil, err
	}
	if len(deps) > 1 {
		return nil, fmt.Errorf("%d active deployments of workflow %s in environment %s", len(deps), in.WorkflowID, in.EnvironmentID)
	}
	dep := deps[0]
	if dep.Archived {
		env, err := control.EnvironmentByID(ctx, c, in.EnvironmentID, "input.environmentID")
		if err != nil {
			return nil, err
		}
		return nil, control.ArchivedError(env, "input.environmentID", "new runs")
	}
	pause, err := parsePause(dep.Pause)
	if err != nil {
		return nil, err
	}
	if pause != nil && pause.Mode == "REJECT" {
		return nil, pause.refuse()
	}
	override, err := parseEnvConcurrency(dep.Concurrency)
	if err != nil {
		return nil, err
	}
	runID := ids.New(ids.Run)
	rt := routeRun(dep.VersionID, dep.Release, runID, in.IdempotencyKey)
	def, err := e.definitionOf(ctx, c, rt.versionID)
	if err != nil {
		return nil, err
	}
	if err := validateRunInput(def, in.Input); err != nil {
		return nil, err
	}
	// Audited as run.start (createRun). A repeat with the same idempotency
	// key returned above: one entry per run started, none for a repeat,
	// which changes nothing.
	return e.createRun(ctx, c, v, newRun{
		workflowID: in.WorkflowID, versionID: rt.versionID, environmentID: in.EnvironmentID,
		input: in.Input, hash: hash, idempotencyKey: in.IdempotencyKey, mode: run.ModeLive, def: def,
		auditStart: true, slaVersion: dep.SLAVersion, varsVersion: dep.VarsVersion, runID: runID, releaseID: rt.releaseID, releaseSide: rt.side,
		paused: pause != nil, priority: priority, runCap: capValue(dep.RunCap), runCapRead: true,
		concurrency: override, concurrencyRead: true,
	})
}

// replayInputFits refuses to replay a run's input on another version whose
// input schema does not accept it: startRun would have refused it too.
func replayInputFits(def *definition.Definition, input map[string]any, path string) error {
	if err := def.ValidateInput(input); err != nil {
		return errs.Invalid(path, "the source run's input does not match this version's input schema: %v", err)
	}
	return nil
}

func validateRunInput(def *definition.Definition, input map[string]any) error {
	err := def.ValidateInput(input)
	if err == nil {
		return nil
	}
	var ve *definition.ValidationError
	if errors.As(err, &ve) {
		problems := make([]errs.Problem, 0, len(ve.Problems))
		for _, p := range ve.Problems {
			problems = append(problems, errs.Problem{Path: "input.input" + p.Path[1:], Message: p.Message})
		}
		return errs.InvalidAll("run input does not match the workflow's input schema: "+ve.Error(), problems)
	}
	return errs.Invalid("input.input", "%v", err)
}

type newRun struct {
	workflowID, versionID, environmentID string
	input                                map[string]any
	hash                                 string
	idempotencyKey                       *string
	mode                                 run.Mode
	replayOf                             *string
	def                                  *definition.Definition
	// auditStart writes the run.start audit entry (startRun).
	auditStart bool
	// parentRunID and parentStepID: the run and workflow step that start
	// this run (a child run, child.go), at depth (0 means 1).
	parentRunID, parentStepID *string
	depth                     int
	// slaVersion is the tenant's sla_version read in this transaction;
	// 0 also when unknown (see createRun).
	slaVersion int64
	// varsVersion is the environment's variables version the run reads
	// (startRun: the current one; a replay or a child: its source's).
	varsVersion int64
	// runID, when set, is the new run's id (startRun routes by it).
	runID string
	// releaseID and releaseSide: the release that routed the run and its side.
	releaseID   *string
	releaseSide *run.ReleaseSide
	// paused: the workflow is paused in the environment (QUEUE): the run
	// is created queued and none of its steps is sent (pause.go).
	paused bool
	// priority: 1 to 5 (fair dispatch); 0 means DefaultPriority.
	priority int
	// keyPath is where a concurrency key that cannot be evaluated for the
	// input is reported ("input.input" if empty).
	keyPath string
	// runCap is the tenant's max_concurrent_runs (0: no cap) when
	// runCapRead (startRun reads it with the deployment); otherwise
	// createRun reads it (runcap.go).
	runCap     int
	runCapRead bool
	// concurrency is the environment's concurrency override (nil: none)
	// when concurrencyRead (startRun reads it with the deployment);
	// otherwise createRun reads it (envconcurrency.go).
	concurrency     *definition.Concurrency
	concurrencyRead bool
}

// createRun inserts a run and its steps and schedules the first ones.
func (e *Service) createRun(ctx context.Context, c *ent.Client, v *viewer.Viewer, nr newRun) (*ent.Run, error) {
	now := e.now()
	if nr.runID == "" {
		nr.runID = ids.New(ids.Run)
	}
	r := &ent.Run{ID: nr.runID, ReleaseID: nr.releaseID, ReleaseSide: nr.releaseSide, TenantID: v.TenantID, CreatedAt: now, UpdatedAt: now, WorkflowID: nr.workflowID,
		VersionID: nr.versionID, EnvironmentID: nr.environmentID, Status: run.StatusQueued, Mode: nr.mode, Input: nr.input,
		InputHash: nr.hash, IdempotencyKey: nr.idempotencyKey, ReplayOf: nr.replayOf, NextSeq: 1,
		TraceID: tracing.NewTraceID(), CreatedBy: v.Subject, ParentRunID: nr.parentRunID, ParentStepID: nr.parentStepID, Depth: max(nr.depth, 1),
		EnvVarsVersion: nr.varsVersion, Priority: nr.priority}
	if r.Priority == 0 {
		r.Priority = DefaultPriority
	}
	if e.sla != nil && nr.mode == run.ModeLive {
		// A sandbox replay is a rehearsal: it neither counts towards
		// service levels nor gets deadlines.
		version := nr.slaVersion
		if !nr.auditStart {
			version = -1 // a replay or a child run: not read with the start
		}
		d, err := e.sla.RunDeadlines(ctx, c, v.TenantID, version, nr.workflowID, nr.environmentID, now)
		if err != nil {
			return nil, fmt.Errorf("SLA deadlines: %w", err)
		}
		r.SLADeadlineAt, r.SLAQueueDeadlineAt, r.SLAMaxCostMicroUsd, r.SLACheckAt = d.DeadlineAt, d.QueueDeadlineAt, d.MaxCostMicroUSD, d.CheckAt()
	}
	keyPath := nr.keyPath
	if keyPath == "" {
		keyPath = "input.input"
	}
	lim := nr.def.Concurrency
	if nr.mode == run.ModeLive {
		// The environment's setting, if any, wins over the definition's.
		l, err := e.effectiveConcurrency(ctx, r, nr)
		if err != nil {
			return nil, err
		}
		lim = l
	}
	decision, err := e.decideKey(ctx, c, r, lim, nr.def, keyPath)
	if err != nil {
		return nil, err
	}
	runCap, err := e.tenantRunCap(ctx, r, nr)
	if err != nil {
		return nil, err
	}
	if decision == keyStart {
		// After the key's decision: a run waiting for its key does not
		// count toward the tenant's cap, and its key's release checks it.
		if decision, err = e.decideRunCap(ctx, r, runCap); err != nil {
			return nil, err
		}
	}
	c.Run.Bind(r)
	if err := insertRun(ctx, r); err != nil {
		return nil, err
	}
	s := &runState{e: e, c: c, run: r, def: nr.def, steps: make(map[string]*ent.StepRun, len(nr.def.Steps)), update: &runChange{}, seq: r.NextSeq, now: now, all: true,
		counts: map[string]int{}, countsChanged: true, deferEval: true, paused: nr.paused, runCapped: runCap > 0}
	if err := s.loadVars(ctx); err != nil {
		return nil, err
	}
	// Steps that can start at once (no needs, no condition, run by a worker)
	// are created queued with their first attempt. Whatever the fan-out,
	// the steps are one statement and the attempts another, held with the
	// run's first flush.
	list := make([]*ent.StepRun, 0, len(nr.def.Steps))
	var attempts []*ent.StepAttempt
	for _, st := range nr.def.Steps {
		sr := c.StepRun.Bind(&ent.StepRun{ID: ids.New(ids.StepRun), TenantID: r.TenantID, CreatedAt: now, UpdatedAt: now, RunID: r.ID, StepID: st.ID,
			Type: st.Type, Status: steprun.StatusPending})
		switch {
		case decision == keySkip:
			sr.Status = steprun.StatusCancelled
		case startsQueued(st) && (decision == keyHold || decision == tenantHold):
			// Waits for its concurrency key or its tenant's cap on runs:
			// queued, not ready, held.
			a := newAttempt(r.TenantID, r.ID, sr, 1, now, now)
			sr.Status, sr.Attempts, sr.CurrentAttemptID = steprun.StatusQueued, 1, &a.ID
			attempts = append(attempts, a)
		case startsQueued(st):
			a := newAttempt(r.TenantID, r.ID, sr, 1, now, now)
			sr.Status, sr.Attempts, sr.CurrentAttemptID, sr.ReadyAt = steprun.StatusQueued, 1, &a.ID, &now
			attempts = append(attempts, a)
			t := stepTask(r.TenantID, r.ID, st.ID, st.Type, a.ID, now)
			t.VersionID = r.VersionID
			s.tasks = append(s.tasks, t)
		}
		list = append(list, sr)
	}
	if err := insertSteps(ctx, r, list, attempts); err != nil {
		return nil, err
	}
	switch decision {
	case keyHold:
		if err := holdFirstSteps(ctx, r, list, heldForKey); err != nil {
			return nil, err
		}
	case tenantHold:
		if err := holdFirstSteps(ctx, r, list, heldForTenantRuns); err != nil {
			return nil, err
		}
	}
	for _, sr := range list {
		s.steps[sr.StepID] = sr
		s.counts[string(sr.Status)]++
	}
	data := map[string]any{"workflowID": r.WorkflowID, "versionID": r.VersionID, "environmentID": r.EnvironmentID, "mode": string(r.Mode)}
	if r.ReleaseID != nil {
		data["releaseID"], data["releaseSide"] = *r.ReleaseID, string(*r.ReleaseSide)
	}
	if nr.replayOf != nil {
		data["replayOf"] = *nr.replayOf
	}
	s.emit(eventtype.RunQueued, "", 0, data)
	if nr.auditStart {
		// Held (store.Deferred) with the run's first flush: no extra round
		// trip per startRun.
		meta := map[string]any{"workflowID": r.WorkflowID, "versionID": r.VersionID, "environmentID": r.EnvironmentID}
		if nr.idempotencyKey != nil {
			meta["idempotencyKey"] = *nr.idempotencyKey
		}
		if nr.releaseID != nil {
			meta["releaseID"], meta["releaseSide"] = *nr.releaseID, string(*nr.releaseSide)
		}
		if err := audit.Record(store.Held(ctx, "audit_logs:run.start:"+r.ID, 1), c, "run.start", "Run", r.ID, meta); err != nil {
			return nil, err
		}
	}
	if decision == keySkip {
		s.skipForKey(lim)
	} else if err := s.advance(ctx); err != nil {
		return nil, err
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	return s.run, nil
}

// startsQueued reports whether a step is scheduled as soon as its run is
// created: it needs nothing and runs on a worker, which also evaluates its
// `if` (decide.go).
func startsQueued(st definition.Step) bool {
	if len(st.Needs) > 0 {
		return false
	}
	switch st.Type {
	case definition.StepTransform, definition.StepHTTP, definition.StepLLM, definition.StepWait, definition.StepWorkflow:
		return true
	}
	return false
}

// operateRun authorizes an operator on a run (role and environment scope)
// and locks it with all its steps.
func (e *Service) operateRun(ctx context.Context, id string) (*viewer.Viewer, *ent.Client, *runState, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := e.lockRun(ctx, c, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if !access.InScope(v, s.run.EnvironmentID) {
		return nil, nil, nil, errs.NotFoundf("run", id)
	}
	return v, c, s, nil
}

// CancelRun stops a run. Steps already running finish and keep their result;
// nothing after them starts.
func (e *Service) CancelRun(ctx context.Context, id string) (*ent.Run, error) {
	return e.CancelRunFor(ctx, id, nil)
}

// CancelRunFor is CancelRun with auditMeta added to its run.cancel audit
// entry (a bulk operation names itself there).
func (e *Service) CancelRunFor(ctx context.Context, id string, auditMeta map[string]any) (*ent.Run, error) {
	v, c, s, err := e.operateRun(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.terminal() {
		return nil, errs.E(errs.Conflict, "run %s is already %s", id, s.run.Status)
	}
	// Its children too (cancelChildren), each after it: parent before child.
	if err := s.cancel(ctx, "cancelled by "+v.Subject, map[string]any{"by": v.Subject}); err != nil {
		return nil, err
	}
	return s.run, audit.Record(ctx, c, "run.cancel", "Run", id, auditMeta)
}

// ResumeRun continues a failed run from its failed steps. Steps that
// succeeded keep their outputs and are not run again.
func (e *Service) ResumeRun(ctx context.Context, id string) (*ent.Run, error) {
	return e.ResumeRunWith(ctx, ResumeInput{ID: id})
}

// ResumeRunWith is ResumeRun on another version and with a patched input
// when in says so (rerun.go).
func (e *Service) ResumeRunWith(ctx context.Context, in ResumeInput) (*ent.Run, error) {
	id := in.ID
	v, c, s, err := e.operateRun(ctx, id)
	if err != nil {
		return nil, err
	}
	if s.run.Status != run.StatusFailed {
		return nil, errs.E(errs.Conflict, "only failed runs can be resumed; run %s is %s", id, s.run.Status)
	}
	if err := refusePurgedID(ctx, c, id, "resumed"); err != nil {
		return nil, err
	}
	if s.run.FailedStepID == nil || *s.run.FailedStepID == "" {
		// Every step succeeded and the run's output failed (its expression
		// or its size): it would fail the same way again (and only workers
		// evaluate it).
		return nil, errs.E(errs.Conflict, "run %s failed at its output (evaluating or storing it), not at a step; there is nothing to resume", id)
	}
	data := map[string]any{"by": v.Subject}
	meta := map[string]any{}
	if in.VersionID != nil && *in.VersionID != s.run.VersionID {
		wv, err := publishedVersionOf(ctx, c, *in.VersionID, s.run.WorkflowID, joinPath(in.Path, "versionID"))
		if err != nil {
			return nil, err
		}
		def, err := e.definitionOf(ctx, c, wv.ID)
		if err != nil {
			return nil, err
		}
		if err := sameSteps(s.def, def, joinPath(in.Path, "versionID")); err != nil {
			return nil, err
		}
		if in.InputPatch == nil {
			input, err := runInput(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("read input of %s: %w", id, err)
			}
			if err := replayInputFits(def, input, joinPath(in.Path, "versionID")); err != nil {
				return nil, err
			}
		}
		data["fromVersionID"], data["versionID"] = s.run.VersionID, wv.ID
		meta["fromVersionID"], meta["versionID"] = s.run.VersionID, wv.ID
		s.def = def
		s.run.VersionID = wv.ID
		s.update.SetVersionID(wv.ID)
	}
	if in.InputPatch != nil {
		input, err := patchedInput(ctx, id, in.InputPatch, s.def, joinPath(in.Path, "inputPatch"))
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(input)
		if err != nil {
			return nil, err
		}
		data["inputPatched"], meta["inputPatch"] = true, in.InputPatch
		s.run.Input = input
		s.input = nil // expressions read the patched input
		s.update.SetInput(b)
	}
	maps.Copy(meta, in.AuditMeta)
	if err := s.reopen(ctx, data); err != nil {
		return nil, err
	}
	if err := s.advance(ctx); err != nil {
		return nil, err
	}
	if err := s.flush(ctx); err != nil {
		return nil, err
	}
	if len(meta) == 0 {
		meta = nil
	}
	return s.run, audit.Record(ctx, c, "run.resume", "Run", id, meta)
}

// reopen moves a failed run back to running (run.resumed with data): its
// failed and cancelled steps are pending again; the caller advances it.
// Tenant expressions are left to workers (deferEval).
func (s *runState) reopen(ctx context.Context, data map[string]any) error {
	s.deferEval = true
	for _, sr := range s.steps {
		switch sr.Status {
		case steprun.StatusFailed, steprun.StatusCancelled:
			u := changeStep().SetStatus(steprun.StatusPending).ClearErrorClass().ClearErrorMessage().ClearFinishedAt().ClearReadyAt()
			if err := s.setStep(ctx, sr, u); err != nil {
				return err
			}
		}
	}
	s.update.ClearErrorClass().ClearErrorMessage().ClearFailedStepID().ClearFinishedAt()
	s.run.Status = run.StatusRunning
	s.run.FinishedAt = nil
	s.update.SetStatus(run.StatusRunning)
	s.emit(eventtype.RunResumed, "", 0, data)
	return nil
}

// ReplayInput is what replayRun takes.
type ReplayInput struct {
	RunID     string
	VersionID *string
	Sandbox   bool
	// Priority of the new run; if nil, ReplayPriority.
	Priority *int
	// InputPatch, when set, is a JSON merge patch (RFC 7396) of the source
	// run's input; the result must match the version's input schema.
	InputPatch map[string]any
	// IdempotencyKey, when set, makes the replay's new run carry it: a
	// second replay with the same key returns the first one's run (a bulk
	// operation derives it from itself and the source run).
	IdempotencyKey *string
	// AuditMeta is added to the run.replay audit entry.
	AuditMeta map[string]any
	// Path prefixes the field paths of VALIDATION errors ("input" if empty).
	Path string
}

// ReplayRun starts a new run with the input of another. In sandbox mode,
// side-effect steps return the source run's recorded outputs and call nothing.
func (e *Service) ReplayRun(ctx context.Context, in ReplayInput) (*ent.Run, error) {
	path := in.Path
	if path == "" {
		path = "input"
	}
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	priority, err := priorityOf(in.Priority, ReplayPriority, path+".priority")
	if err != nil {
		return nil, err
	}
	src, err := c.Run.Get(ctx, in.RunID)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("run", in.RunID)
	}
	if err != nil {
		return nil, err
	}
	if !access.InScope(v, src.EnvironmentID) {
		return nil, errs.NotFoundf("run", in.RunID)
	}
	if err := refusePurged(src, "replayed"); err != nil {
		return nil, err
	}
	if k := in.IdempotencyKey; k != nil {
		if _, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", v.TenantID+"/"+*k); err != nil {
			return nil, err
		}
		existing, err := c.Run.Query().Where(run.IdempotencyKey(*k)).Only(ctx)
		if err == nil {
			if existing.ReplayOf == nil || *existing.ReplayOf != src.ID {
				return nil, errs.E(errs.Conflict, "idempotency key %q was used for another run", *k)
			}
			return existing, nil
		}
		if !ent.IsNotFound(err) {
			return nil, err
		}
	}
	versionID := src.VersionID
	if in.VersionID != nil {
		wv, err := publishedVersionOf(ctx, c, *in.VersionID, src.WorkflowID, path+".versionID")
		if err != nil {
			return nil, err
		}
		versionID = wv.ID
	}
	def, err := e.definitionOf(ctx, c, versionID)
	if err != nil {
		return nil, err
	}
	mode := run.ModeLive
	if in.Sandbox {
		mode = run.ModeSandbox
	} else {
		// A live replay is a new run: an archived environment refuses it.
		// A sandbox replay calls nothing and stays allowed.
		env, err := control.EnvironmentByID(ctx, c, src.EnvironmentID, path+".runID")
		if err != nil {
			return nil, err
		}
		if env.ArchivedAt != nil {
			return nil, control.ArchivedError(env, path+".runID", "new runs (a sandbox replay is allowed)")
		}
	}
	srcID := src.ID
	hash := src.InputHash
	var input map[string]any
	if in.InputPatch != nil {
		if in.Sandbox {
			// A sandbox replay answers side effects with the source run's
			// recorded responses: with another input they would not match.
			return nil, errs.Invalid(path+".inputPatch", "a SANDBOX replay runs the source run's input; patch the input in a LIVE replay")
		}
		if input, err = patchedInput(ctx, src.ID, in.InputPatch, def, path+".inputPatch"); err != nil {
			return nil, err
		}
		hash = inputHash(input)
	} else {
		// The input as stored: Ent's decoding rounds ints beyond 2^53.
		if input, err = runInput(ctx, src.ID); err != nil {
			return nil, fmt.Errorf("read input of %s: %w", src.ID, err)
		}
		if versionID != src.VersionID {
			if err := replayInputFits(def, input, path+".versionID"); err != nil {
				return nil, err
			}
		}
	}
	r, err := e.createRun(ctx, c, v, newRun{
		workflowID: src.WorkflowID, versionID: versionID, environmentID: src.EnvironmentID,
		input: input, hash: hash, mode: mode, replayOf: &srcID, def: def, idempotencyKey: in.IdempotencyKey,
		varsVersion: src.EnvVarsVersion, // the values the source run saw
		priority:    priority,
	})
	if err != nil {
		return nil, err
	}
	meta := map[string]any{"source": src.ID, "mode": string(mode)}
	if in.InputPatch != nil {
		meta["inputPatch"] = in.InputPatch
	}
	maps.Copy(meta, in.AuditMeta)
	return r, audit.Record(ctx, c, "run.replay", "Run", r.ID, meta)
}

// StartSandboxReplay starts a SANDBOX replay of run sourceID on version
// versionID (the same workflow's) for the system viewer in ctx, in the
// tenant transaction of c: an evaluation's example (internal/evals). It
// writes no audit entry (the evaluation's creation is audited) and checks
// no role: the caller decided.
func (e *Service) StartSandboxReplay(ctx context.Context, c *ent.Client, sourceID, versionID string) (*ent.Run, error) {
	v := viewer.FromContext(ctx)
	if v == nil || v.TenantID == "" {
		return nil, errors.New("sandbox replay without a tenant in context")
	}
	src, err := c.Run.Get(ctx, sourceID)
	if err != nil {
		return nil, err
	}
	if err := refusePurged(src, "replayed"); err != nil {
		return nil, err
	}
	def, err := e.definitionOf(ctx, c, versionID)
	if err != nil {
		return nil, err
	}
	input, err := runInput(ctx, src.ID)
	if err != nil {
		return nil, fmt.Errorf("read input of %s: %w", src.ID, err)
	}
	if versionID != src.VersionID {
		if err := replayInputFits(def, input, "versionID"); err != nil {
			return nil, err
		}
	}
	srcID := src.ID
	return e.createRun(ctx, c, v, newRun{
		workflowID: src.WorkflowID, versionID: versionID, environmentID: src.EnvironmentID,
		input: input, hash: src.InputHash, mode: run.ModeSandbox, replayOf: &srcID, def: def,
		priority: ReplayPriority, // an evaluation's example
	})
}

// refusePurged refuses to replay or resume a run whose payloads retention
// purged (internal/retention): its input, step outputs and recorded calls
// are gone, so nothing could run as it did.
func refusePurged(r *ent.Run, what string) error {
	if r.PayloadPurgedAt == nil {
		return nil
	}
	return errs.E(errs.Conflict, "run %s cannot be %s: its payloads (input, step outputs, recorded calls) were purged by retention at %s",
		r.ID, what, r.PayloadPurgedAt.UTC().Format(time.RFC3339))
}

// refusePurgedID is refusePurged for the run id, read in c's transaction.
func refusePurgedID(ctx context.Context, c *ent.Client, id, what string) error {
	r, err := c.Run.Query().Where(run.ID(id), run.PayloadPurgedAtNotNil()).Only(ctx)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return refusePurged(r, what)
}
