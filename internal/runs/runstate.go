package runs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/envvars"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tally"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// runState is one locked run inside one transaction: every state change of a
// run goes through it, so events get gapless sequence numbers and tasks are
// sent only after commit. Callers load it with lockRun, change it, then flush.
type runState struct {
	e      *Service
	c      *ent.Client
	run    *ent.Run
	def    *definition.Definition
	steps  map[string]*ent.StepRun
	update *runChange
	seq    int64
	events []*ent.RunEvent
	tasks  []tasks.Task
	now    time.Time
	dirty  bool
	all    bool // every step is loaded
	// continueWith, when set, receives one step attempt due now instead of
	// the queue: the caller runs it next (see executeAttempt).
	continueWith *AttemptRef
	// afterCommit holds observations (metrics) that count only once durable.
	afterCommit []func()
	// finishedRun: the run reached a terminal status since the last flush.
	finishedRun bool
	// loaded are steps read with the lock (lockRunSteps), found or not.
	loaded []string
	// counts is how many steps are in each status (the run's step_counts),
	// kept by setStep; nil until known (see stepCounts).
	counts        map[string]int
	countsChanged bool
	// unwritten holds step changes made in memory only (deferStep),
	// written with the step's next setStep or at flush: a pure step's start
	// and result become one UPDATE.
	unwritten map[string]*stepChange
	// lockedAt is when the run's lock was taken.
	lockedAt time.Time
	// endpointsVersion is the tenant's webhooks_version as read with the
	// run's lock, or -1: the outbox caches the tenant's webhook endpoints
	// under it (see Outbox).
	endpointsVersion int64
	// input is the run's input as expressions see it (expressionEnv).
	input any
	// vars is the environment's variables of the run's recorded version
	// (loadVars), as env.vars shows them.
	vars []envvars.Variable
	// hold makes flush a no-op, so that several steps finished in one
	// transaction (runReadyTransforms) are written with one flush.
	hold bool
	// paused: the run's workflow is paused in its environment (pause.go),
	// as read with the run's lock: no step starts or is sent to the queue.
	paused bool
	// capped: the run's tenant has a cap on the steps it runs at once, so a
	// claim checks for a free slot (dispatch.go). tenantHeld: the tenant had
	// held steps when the run was locked; after commit the service asks for
	// a release.
	capped, tenantHeld bool
	// runCapped: the run's tenant caps its unfinished runs
	// (plan.maxConcurrentRuns): when the run finishes, its transaction
	// releases the next waiting run (runcap.go).
	runCapped bool
	// noKeyRelease: when the run finishes, it releases no run waiting for
	// its concurrency key (concurrency.go): a new run takes its place.
	noKeyRelease bool
	// limitsLeft are the named limits whose steps stopped holding a slot
	// since the last flush (limits.go): the flush releases their held steps.
	limitsLeft []string
	// deferEval marks a run state changed by an API request: starting a
	// step that evaluates a tenant expression is left to a worker (see
	// decide.go).
	deferEval bool
}

// lockRun loads a run with SELECT ... FOR UPDATE (serialising every change to
// it), its definition and all its steps.
func (e *Service) lockRun(ctx context.Context, c *ent.Client, runID string) (*runState, error) {
	s, err := e.lockRunSteps(ctx, c, runID)
	if err != nil {
		return nil, err
	}
	return s, s.loadAll(ctx)
}

// lockRunSteps locks a run like lockRun but loads only the steps named; more
// are loaded on demand (load). The hot paths use it so that a step's work
// costs the same in a run of 3 steps and of 1,000.
func (e *Service) lockRunSteps(ctx context.Context, c *ent.Client, runID string, stepIDs ...string) (*runState, error) {
	var r *ent.Run
	var endpointsVersion int64
	var flags lockFlags
	var preloaded []*ent.StepRun
	var err error
	if len(stepIDs) > 0 {
		// The lock and the steps in one round trip.
		r, endpointsVersion, flags, preloaded, err = lockRunWithSteps(ctx, tenantOf(ctx), runID, stepIDs)
	} else {
		r, endpointsVersion, flags, err = lockRunRow(ctx, runID)
	}
	if err != nil {
		return nil, err
	}
	def, err := e.definitionOf(ctx, c, r.VersionID)
	if err != nil {
		return nil, err
	}
	now := e.now()
	s := &runState{e: e, c: c, run: r, def: def, steps: map[string]*ent.StepRun{}, update: &runChange{}, seq: r.NextSeq, now: now, lockedAt: now,
		endpointsVersion: endpointsVersion, paused: flags.paused, capped: flags.capped, tenantHeld: flags.tenantHeld, runCapped: flags.runCapped}
	if err := s.loadVars(ctx); err != nil {
		return nil, err
	}
	if sum(r.StepCounts) == len(def.Steps) {
		s.counts = maps.Clone(r.StepCounts)
	}
	for _, sr := range preloaded {
		s.steps[sr.StepID] = sr
	}
	s.loaded = stepIDs // read, whether or not each exists
	return s, nil
}

// load reads the named steps that are not loaded yet.
func (s *runState) load(ctx context.Context, stepIDs ...string) error {
	var missing []string
	for _, id := range stepIDs {
		if _, ok := s.steps[id]; !ok && !slices.Contains(missing, id) && !slices.Contains(s.loaded, id) {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 || s.all {
		return nil
	}
	list, err := stepRows(ctx, s.run.TenantID, s.run.ID, missing)
	if err != nil {
		return fmt.Errorf("load steps: %w", err)
	}
	for _, sr := range list {
		s.steps[sr.StepID] = sr
	}
	return nil
}

// loadAll reads every step of the run.
func (s *runState) loadAll(ctx context.Context) error {
	if s.all {
		return nil
	}
	list, err := stepRows(ctx, s.run.TenantID, s.run.ID, nil)
	if err != nil {
		return fmt.Errorf("load steps: %w", err)
	}
	for _, sr := range list {
		if _, ok := s.steps[sr.StepID]; !ok {
			s.steps[sr.StepID] = sr
		}
	}
	s.all = true
	return nil
}

// dependents maps each step of a version to the steps that need it.
func (e *Service) dependentsOf(versionID string, def *definition.Definition) map[string][]string {
	if m, ok := e.dependents.Load(versionID); ok {
		return m.(map[string][]string)
	}
	m := map[string][]string{}
	for _, st := range def.Steps {
		for _, n := range st.Needs {
			m[n] = append(m[n], st.ID)
		}
	}
	e.dependents.Store(versionID, m)
	return m
}

// DefinitionOf returns the parsed definition of a version, from the same
// cache the run state machine reads (neighbours such as evaluations use it).
func (e *Service) DefinitionOf(ctx context.Context, c *ent.Client, versionID string) (*definition.Definition, error) {
	return e.definitionOf(ctx, c, versionID)
}

// definitionOf returns the parsed definition of a version. Published
// versions are immutable, so the parse is cached by version id.
func (e *Service) definitionOf(ctx context.Context, c *ent.Client, versionID string) (*definition.Definition, error) {
	if d, ok := e.defs.Load(versionID); ok {
		return d.(*definition.Definition), nil
	}
	wv, err := c.WorkflowVersion.Get(ctx, versionID)
	if err != nil {
		return nil, fmt.Errorf("load version: %w", err)
	}
	raw, err := json.Marshal(wv.Definition)
	if err != nil {
		return nil, err
	}
	d, err := definition.ParseStored(raw)
	if err != nil {
		return nil, fmt.Errorf("parse definition of %s: %w", versionID, err)
	}
	if wv.Status == "published" {
		e.defs.Store(versionID, d)
	}
	return d, nil
}

// emit appends an event to the run's log.
func (s *runState) emit(typ eventtype.Type, stepID string, attempt int, data map[string]any) {
	ev := &ent.RunEvent{ID: ids.New(ids.RunEvent), TenantID: s.run.TenantID, RunID: s.run.ID, Seq: s.seq, Type: string(typ), Data: data, At: s.now}
	if stepID != "" {
		ev.StepID = &stepID
	}
	if attempt > 0 {
		ev.Attempt = &attempt
	}
	s.events = append(s.events, ev)
	s.seq++
	s.dirty = true
}

// setStatus moves the run to status and emits the matching event.
func (s *runState) setStatus(status run.Status, data map[string]any) {
	if s.run.Status == status {
		return
	}
	s.run.Status = status
	s.update.SetStatus(status)
	s.dirty = true
	switch status {
	case run.StatusRunning:
		if s.run.StartedAt == nil {
			s.run.StartedAt = &s.now
			s.update.SetStartedAt(s.now)
			s.emit(eventtype.RunStarted, "", 0, data)
			return
		}
	case run.StatusSucceeded, run.StatusFailed, run.StatusCancelled:
		s.run.FinishedAt = &s.now
		s.update.SetFinishedAt(s.now)
		class := ""
		if s.run.ErrorClass != nil {
			class = *s.run.ErrorClass
		}
		e, st, r, now := s.e, string(status), s.run, s.now
		s.finishedRun = true
		s.afterCommit = append(s.afterCommit, func() {
			e.metrics.runFinished(st, class)
			e.tracer.RecordRun(r.TraceID, r.TenantID, r.ID, r.WorkflowID, r.VersionID, st, r.CreatedAt, now)
		})
	}
	s.emit(eventtype.ForRunStatus(string(status)), "", 0, data)
}

func (s *runState) terminal() bool {
	switch s.run.Status {
	case run.StatusSucceeded, run.StatusFailed, run.StatusCancelled:
		return true
	}
	return false
}

// flush writes the events and the run row, and queues tasks for after commit.
func (s *runState) flush(ctx context.Context) error {
	if s.hold {
		return nil
	}
	for id := range s.unwritten {
		if err := s.setStep(ctx, s.steps[id], changeStep()); err != nil {
			return err
		}
	}
	saved := s.events
	if len(saved) > 0 {
		if err := insertEvents(ctx, saved); err != nil {
			return fmt.Errorf("append events: %w", err)
		}
		s.events = nil
		if s.e.outbox != nil {
			ts, err := s.e.outbox.Record(ctx, s.c, s.run, s.endpointsVersion, saved, s.now)
			if err != nil {
				return err
			}
			s.tasks = append(s.tasks, ts...)
		}
	}
	if s.dirty {
		s.update.SetNextSeq(s.seq).SetUpdatedAt(s.now)
		if s.countsChanged {
			s.update.SetStepCounts(maps.Clone(s.counts))
			s.countsChanged = false
		}
		if err := s.update.hold(ctx, "runs", s.run.ID, 1); err != nil {
			return fmt.Errorf("update run: %w", err)
		}
		// A copy: the previous one may have been handed out.
		r := *s.run
		for _, f := range s.update.apply {
			f(&r)
		}
		s.run = &r
		s.update = &runChange{}
		s.dirty = false
	}
	s.holdDispatch()
	if s.continueWith != nil && s.continueWith.ID == "" {
		for i, t := range s.tasks {
			if t.Kind == tasks.KindStep && !t.At.After(s.now) {
				*s.continueWith = AttemptRef{RunID: t.RunID, StepID: t.StepID, ID: t.ID}
				if step, ok := s.def.StepByID(t.StepID); ok {
					// What its claim will read, read with the run's lock.
					loads := s.claimLoads(step, s.runsInClaim(step))
					s.continueWith.preload = &loads
				}
				s.tasks = append(s.tasks[:i], s.tasks[i+1:]...)
				break
			}
		}
	}
	// The steps sent to the queue go through the tenant's share; a
	// continuation (above) takes over its predecessor's place.
	if err := s.admit(ctx); err != nil {
		return err
	}
	s.askRelease(ctx)
	checkFirstPerRun(s.tasks)
	// After-commit work runs last registered first (store.AfterCommit wraps
	// Ent's commit hooks): the tasks are registered last so that a worker
	// is woken before subscribers are told and metrics recorded, which
	// would otherwise delay a new run's first step by a Redis round trip.
	if len(saved) > 0 {
		s.e.publishAfterCommit(ctx, RunNotice{TenantID: s.run.TenantID, RunID: s.run.ID, Status: string(s.run.Status), CostMicroUSD: s.run.CostMicroUsd, Events: saved})
	}
	for _, fn := range s.afterCommit {
		store.AfterCommit(ctx, fn)
	}
	s.afterCommit = nil
	if s.finishedRun && s.run.ParentRunID != nil {
		if err := s.notifyParent(ctx); err != nil {
			return err
		}
	}
	// Steps with a named limit that left make room for its held ones.
	if err := s.releaseLimits(ctx); err != nil {
		return err
	}
	if s.finishedRun {
		// A run with a concurrency key makes room for the key's next one.
		if err := s.releaseKey(ctx); err != nil {
			return err
		}
		// A run of a tenant with a cap on runs makes room for its next one.
		if err := s.releaseRuns(ctx); err != nil {
			return err
		}
		s.finishedRun = false
		store.AfterCommit(ctx, func() { tally.Rename(ctx, "finish") })
	}
	s.e.dispatchAfterCommit(ctx, s.tasks)
	s.tasks = nil
	return nil
}

// expressionEnv is what a step's expressions see: the run input and the
// outputs of succeeded steps, their numbers typed by the number rule and
// the definition's declared types (Definition.InputValue, OutputValue),
// whether they were recorded in this transaction or read back from
// Postgres, so a run, its resume and its replays see the same values.
func (s *runState) expressionEnv() definition.Env {
	stepsEnv := make(map[string]any, len(s.steps))
	for id, sr := range s.steps {
		if sr.Status == steprun.StatusSucceeded {
			stepsEnv[id] = map[string]any{"output": s.def.OutputValue(id, sr.Output)}
		}
	}
	if s.input == nil {
		// The input is immutable and expressions never change their
		// values: one copy per run state.
		s.input = s.def.InputValue(s.run.Input)
	}
	return definition.Env{
		Input: s.input,
		Steps: stepsEnv,
		Run:   map[string]any{"id": s.run.ID, "workflowID": s.run.WorkflowID, "versionID": s.run.VersionID, "environmentID": s.run.EnvironmentID, "mode": string(s.run.Mode)},
		Env:   map[string]any{"id": s.run.EnvironmentID, "vars": s.varsValue()},
	}
}

// decodeJSON decodes stored JSON with the number rule; nil when it does
// not decode.
func decodeJSON(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	v, err := definition.DecodeJSON(raw)
	if err != nil {
		return nil
	}
	return v
}

func encodeJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// failRun marks the run failed by a step and stops its other queued work;
// running steps finish and keep their results for a resume.
func (s *runState) failRun(ctx context.Context, stepID, class, message string) error {
	if s.terminal() {
		return nil
	}
	s.update.SetErrorClass(class).SetErrorMessage(message).SetFailedStepID(stepID)
	s.run.ErrorClass, s.run.ErrorMessage, s.run.FailedStepID = &class, &message, &stepID
	if err := s.stopPending(ctx, steprun.StatusCancelled); err != nil {
		return err
	}
	s.setStatus(run.StatusFailed, map[string]any{"class": class, "message": message, "stepID": stepID})
	return nil
}

// stopPending moves queued and waiting steps to status and cancels their
// open approvals and waits.
func (s *runState) stopPending(ctx context.Context, status steprun.Status) error {
	open, err := stepRowsIn(ctx, s.run.TenantID, s.run.ID, steprun.StatusQueued, steprun.StatusWaiting)
	if err != nil {
		return err
	}
	for _, sr := range open {
		s.steps[sr.StepID] = sr
	}
	for _, sr := range open {
		if sr.Status != steprun.StatusQueued && sr.Status != steprun.StatusWaiting {
			continue
		}
		if err := s.setStep(ctx, sr, changeStep().SetStatus(status).ClearReadyAt()); err != nil {
			return err
		}
		if sr.CurrentAttemptID != nil {
			if err := s.setAttempt(ctx, *sr.CurrentAttemptID, changeAttempt().SetStatus("cancelled").SetFinishedAt(s.now), -1); err != nil {
				return err
			}
		}
	}
	if err := s.cancelRunMapItems(ctx); err != nil {
		return err
	}
	if err := cancelPendingApprovals(ctx, s.run.TenantID, s.run.ID, s.now); err != nil {
		return err
	}
	if err := s.resolveRunEscalations(ctx); err != nil {
		return err
	}
	if err := cancelPendingWaits(ctx, s.run.TenantID, s.run.ID, s.now); err != nil {
		return err
	}
	return s.cancelChildren(ctx)
}

// setStep writes a step change (one UPDATE, held for the transaction's
// next statement, nothing read back) with any change deferStep left
// unwritten, and keeps the in-memory copy and the run's step counts
// current.
func (s *runState) setStep(ctx context.Context, sr *ent.StepRun, u *stepChange) error {
	w := &stepChange{}
	if d := s.unwritten[sr.StepID]; d != nil {
		w.merge(&d.columnSet)
		delete(s.unwritten, sr.StepID)
	}
	w.merge(&u.columnSet)
	if _, ok := u.columnSetHas("updated_at"); !ok {
		u.SetUpdatedAt(s.now)
		w.set("updated_at", s.now)
	}
	// It must change exactly this row.
	if err := w.hold(ctx, "step_runs", sr.ID, 1); err != nil {
		return fmt.Errorf("update step %s: %w", sr.StepID, err)
	}
	s.replaceStep(sr, u)
	return nil
}

// replaceStep puts in place of sr its copy with u applied, and counts the
// change of status.
func (s *runState) replaceStep(sr *ent.StepRun, u *stepChange) {
	updated := *sr
	for _, f := range u.apply {
		f(&updated)
	}
	s.steps[sr.StepID] = &updated
	if updated.Status != sr.Status {
		s.noteLimitLeft(sr, &updated)
	}
	if updated.Status != sr.Status && s.counts != nil {
		if s.counts[string(sr.Status)]--; s.counts[string(sr.Status)] <= 0 {
			delete(s.counts, string(sr.Status))
		}
		s.counts[string(updated.Status)]++
		s.countsChanged, s.dirty = true, true
	}
}

// deferStep applies a step change in memory only; the step's next setStep,
// or flush, writes it. The caller must not have read the row's new state
// from the database in between (nothing in this transaction does).
func (s *runState) deferStep(sr *ent.StepRun, u *stepChange) error {
	if s.unwritten[sr.StepID] != nil {
		return fmt.Errorf("step %s: an unwritten change is already pending", sr.StepID)
	}
	s.replaceStep(sr, u)
	if s.unwritten == nil {
		s.unwritten = map[string]*stepChange{}
	}
	s.unwritten[sr.StepID] = u
	return nil
}

// setAttempt writes an attempt change: one UPDATE of that attempt, nothing
// read back, held for the transaction's next statement. rows is how many
// rows it must change: 1, or -1 when the attempt may be gone.
func (s *runState) setAttempt(ctx context.Context, attemptID string, u *attemptChange, rows int) error {
	if err := u.hold(ctx, "step_attempts", attemptID, rows); err != nil {
		return fmt.Errorf("update attempt %s: %w", attemptID, err)
	}
	return nil
}

func sum(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c
	}
	return n
}

// checkFirstPerRun keeps the CheckFirst hint only on transform tasks whose
// run has another transform task among tasks (a flush's steps made ready
// together, or steps released together): those may run in one another's
// batch (runReadyTransforms). A run's lone transform cannot have been run
// by another delivery's batch, so its delivery goes straight to its claim
// (a look first would be a round trip for nothing, e.g. on every held
// chain step).
func checkFirstPerRun(tasks []tasks.Task) {
	n := map[string]int{}
	for _, t := range tasks {
		if t.CheckFirst {
			n[t.RunID]++
		}
	}
	for i := range tasks {
		if n[tasks[i].RunID] < 2 {
			tasks[i].CheckFirst = false
		}
	}
}

// tenantOf is the tenant of the viewer in ctx.
func tenantOf(ctx context.Context) string {
	if v := viewer.FromContext(ctx); v != nil {
		return v.TenantID
	}
	return ""
}
