package runs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tally"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/tracing"
	"github.com/sluicehq/sluice/internal/viewer"
)

// job is what an attempt needs once its transaction has closed: side effects
// run outside any transaction.
type job struct {
	tenantID, runID, attemptID string
	environmentID              string // the run's, for rate limits by credential
	waitForSlots               bool   // map items: rate limit waits in process, not deferrals
	stepRunID                  string
	attempt                    int
	step                       *definition.Step
	env                        definition.Env
	credential                 *steps.Credential
	fallbacks                  []steps.Fallback // an llm step's, credentials resolved like credential
	idempotencyKey             string
	recorded                   any  // sandbox: the source run's output for a side-effect step
	replayed                   bool // sandbox side-effect step: return recorded, call nothing
	// unrecorded: why the recording cannot answer this replayed step
	// (SandboxStep.Unrecorded); the attempt fails, naming it.
	unrecorded string
	budget     *steps.Error
	budgetData map[string]any
	// runCost and maxRunCost: what the run had spent at the claim and its
	// maxCostUSD, for the budget checks of an llm step's later calls.
	runCost    int64
	maxRunCost *float64
	started    time.Time
	claimed    bool // this delivery moved the step to running
	// held: an at_most_once attempt whose send another holder recorded
	// first (markSent); this delivery sent nothing and records nothing.
	held bool
	// state is set for steps run inside their claim's transaction (no I/O
	// to guard): the claim's unflushed run state, finished in place.
	state *runState
	// finishLoads are the steps recording the result reads (the step, its
	// dependents and what they need), read with the run's lock.
	finishLoads []string
	resp        *respCheck // an http step's response cache and drift check (respchecks.go)
}

// AttemptRef names a step attempt as its task carries it. Only ID is
// required; RunID and StepID, when known, spare a lookup.
type AttemptRef struct {
	RunID, StepID, ID string
	// VersionID, when known, is the run's workflow version (see preload).
	VersionID string
	// CheckFirst: the step is a transform that another delivery may run in
	// its batch (runReadyTransforms), so a delivery checks before locking.
	CheckFirst bool
	// preload names the steps the claim reads, when known (a continuation):
	// they are read with the run's lock, in one round trip. A pointer keeps
	// AttemptRef comparable.
	preload *[]string
}

// ExecuteChain runs the step attempt ref names and then, back to back, the
// attempts its result makes ready (up to maxContinuations). Each attempt
// is claimed (fenced), executed outside any transaction, recorded (fenced
// again) and advances the run (executeAttempt). A late or duplicate
// delivery of the same attempt changes nothing.
func (e *Service) ExecuteChain(ctx context.Context, tenantID string, ref AttemptRef) error {
	// The state machine's statements are shaped for cached plans (rows by
	// primary key, tenants by RLS): see store.GenericPlans.
	ctx = store.GenericPlans(viewer.SystemContext(ctx, tenantID))
	for i := 0; ref.ID != ""; i++ {
		// Each attempt's wire cost, by how it came: from the queue ("step"),
		// back to back ("continuation"), or finishing its run ("finish").
		t, path := &tally.Tally{}, "step"
		if i > 0 {
			path = "continuation"
		}
		next, err := e.executeAttempt(tally.With(ctx, t), ref, i < maxContinuations)
		tally.Record(path, t)
		if err != nil {
			return err
		}
		ref = next
	}
	return nil
}

// stepTx runs a step's transaction: in a group with other runs' steps
// when the service has one (Options.Group), else in one of its own. runID
// orders the group's lock taking.
func (e *Service) stepTx(ctx context.Context, runID string, fn func(ctx context.Context) error) error {
	if e.group != nil {
		return e.group.InTenant(ctx, runID, fn)
	}
	return store.InTenant(ctx, e.client, fn)
}

// maxContinuations bounds how many steps one delivery runs back to back.
// Continuing saves the queue round trip between a step and the next one
// (the dominant cost of a chain); the bound keeps one task from holding a
// worker slot indefinitely.
const maxContinuations = 1000

// executeAttempt runs one attempt. With mayContinue, a step its result made
// ready now is not sent through the queue but returned, for this worker to
// run next; if the worker dies first, the step is queued and past due in
// Postgres, so the reconciler sends it.
func (e *Service) executeAttempt(ctx context.Context, ref AttemptRef, mayContinue bool) (AttemptRef, error) {
	var j *job
	var next AttemptRef
	var nextPtr *AttemptRef
	if mayContinue {
		nextPtr = &next
	}
	for try := 0; ; try++ {
		var early time.Duration
		err := e.stepTx(ctx, ref.RunID, func(ctx context.Context) error {
			// Run again from the start if its transaction is retried.
			next = AttemptRef{}
			var s *runState
			var err error
			j, s, early, err = e.claimAttempt(ctx, ref)
			if err != nil || s == nil || early > 0 || (j != nil && j.state == nil) {
				return err
			}
			// A pure step (or none: another delivery's batch ran it) with
			// the run locked: finish it and any other ready transforms of
			// the run in this transaction, with one flush.
			s.hold = true
			if j != nil {
				out, calls, execErr := e.runStep(ctx, j)
				if err := e.finishAttempt(ctx, j, out, calls, execErr, nextPtr); err != nil {
					return err
				}
			}
			if err := e.runReadyTransforms(ctx, s, nextPtr); err != nil {
				return err
			}
			s.hold = false
			return s.flush(ctx)
		})
		if err != nil {
			return AttemptRef{}, err
		}
		if early <= 0 || try == 2 {
			break
		}
		// Delivered a little early: wait until it is due, outside any
		// transaction, so retries honour their backoff and Retry-After.
		select {
		case <-time.After(early):
		case <-ctx.Done():
			return AttemptRef{}, ctx.Err()
		}
	}
	if j == nil {
		return AttemptRef{}, nil
	}
	if j.state != nil {
		return next, nil // ran and finished inside the claim's transaction
	}
	stop := e.heartbeat(ctx, j)
	out, calls, execErr := e.runStep(ctx, j)
	stop()
	if j.held {
		return AttemptRef{}, nil
	}
	if ctx.Err() != nil {
		// Shutdown or lost lease: leave the attempt running; the queue
		// redelivers it and the fence keeps one result.
		return AttemptRef{}, ctx.Err()
	}
	err := e.stepTx(context.WithoutCancel(ctx), ref.RunID, func(ctx context.Context) error {
		next = AttemptRef{}
		return e.finishAttempt(ctx, j, out, calls, execErr, nextPtr)
	})
	if err != nil {
		return AttemptRef{}, err
	}
	return next, nil
}

// Heartbeats: a worker executing an attempt touches its step every third
// of the stale period (HeartbeatStale by default, Options.HeartbeatStale);
// a running step untouched for that long is presumed abandoned (its worker
// died) and may be taken over.
const HeartbeatStale = 15 * time.Second

// heartbeat keeps the step of j marked alive until the returned stop is called.
func (e *Service) heartbeat(ctx context.Context, j *job) (stop func()) {
	return e.keepAlive(ctx, func(ctx context.Context) error {
		return beat(ctx, j.stepRunID, j.attemptID, e.now())
	}, "heartbeat", "attempt_id", j.attemptID)
}

// keepAlive runs beat in a tenant transaction every third of the stale
// period until the returned stop is called or ctx ends; a failed beat is
// logged with msg and the key and value that name what it keeps alive.
func (e *Service) keepAlive(ctx context.Context, beat func(ctx context.Context) error, msg, key, id string) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(e.stale / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := store.InTenant(ctx, e.client, beat); err != nil && ctx.Err() == nil {
					e.log.WarnContext(ctx, msg, "err", err, key, id)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// lateDelivery is how late past due a transform's delivery must be to be
// run outside its claim's transaction (see claimAttempt): the queue
// redelivers the task of a dead worker once its lease (30s) expires.
const lateDelivery = 20 * time.Second

// maxEarlyWait bounds how long a worker holds an attempt delivered before
// it is due. The queue schedules in whole seconds, so a delivery can come up
// to a second early; one earlier than this (clock skew) is dropped and the
// reconciler sends it again once it is due.
const maxEarlyWait = 2 * time.Second

// claimAttempt locks the attempt's run, reads the steps the attempt may
// touch and claims the attempt (claimStep). It returns the locked run state
// too, also when the job is nil (nothing to do for this attempt) so that the
// caller may run the run's other ready transforms; the state is nil when the
// run is gone or its lock was not taken.
func (e *Service) claimAttempt(ctx context.Context, ref AttemptRef) (*job, *runState, time.Duration, error) {
	c := ent.FromContext(ctx)
	attemptID := ref.ID
	if ref.RunID == "" || ref.StepID == "" {
		// A task from before tasks named their run and step.
		runID, stepID, found, err := attemptStep(ctx, tenantOf(ctx), attemptID)
		if err != nil || !found {
			return nil, nil, 0, err
		}
		ref.RunID, ref.StepID = runID, stepID
	}
	if ref.CheckFirst {
		// Another delivery may have run it in a batch: look before queueing
		// behind the run's lock for nothing.
		open, err := attemptIsOpen(ctx, tenantOf(ctx), ref.RunID, ref.StepID, attemptID)
		if err != nil || !open {
			return nil, nil, 0, err
		}
	}
	preload := []string{ref.StepID} // at least the step itself
	if ref.preload != nil {
		preload = *ref.preload
	} else if d, ok := e.defs.Load(ref.VersionID); ok && ref.VersionID != "" {
		// The definition is known: every step the claim may read, even if
		// it turns out not to run in its claim.
		def := d.(*definition.Definition)
		if step, ok := def.StepByID(ref.StepID); ok {
			preload = e.claimLoadsOf(ref.VersionID, def, step, true)
		}
	}
	s, err := e.lockRunSteps(ctx, c, ref.RunID, preload...)
	if errs.CodeOf(err) == errs.NotFound {
		return nil, nil, 0, nil
	}
	if err != nil {
		return nil, nil, 0, err
	}
	step, ok := s.def.StepByID(ref.StepID)
	if !ok {
		return nil, nil, 0, nil
	}
	pure := s.runsInClaim(step)
	if err := s.load(ctx, s.claimLoads(step, pure)...); err != nil {
		return nil, nil, 0, err
	}
	sr := s.steps[ref.StepID]
	if pure && step.Type == definition.StepTransform && sr != nil && sr.ReadyAt != nil && s.now.Sub(*sr.ReadyAt) > lateDelivery {
		// A late delivery may be the queue's redelivery after a worker died
		// evaluating this transform inside its claim's transaction, which
		// rolled back and left no trace. Claim it in a transaction of its
		// own instead, with heartbeats: a worker dying again is then taken
		// over and counted towards the crash limit (crashedTooOften).
		pure = false
		e.log.DebugContext(ctx, "late transform claimed in a transaction of its own", "run_id", ref.RunID, "step_id", ref.StepID, "late", s.now.Sub(*sr.ReadyAt).String())
	}
	if s.terminal() || sr == nil || sr.CurrentAttemptID == nil || *sr.CurrentAttemptID != attemptID {
		return nil, s, 0, nil
	}
	j, early, err := s.claimStep(ctx, step, sr, pure)
	return j, s, early, err
}

// runsInClaim reports whether a step runs inside its claim's transaction: no I/O
// to guard (a transform, a delay's end, a sandbox replay's recorded output).
func (s *runState) runsInClaim(step *definition.Step) bool {
	return step.Type == definition.StepTransform || step.Type == definition.StepDelay || step.Type == definition.StepWait ||
		step.Type == definition.StepMap || step.Type == definition.StepWorkflow || (s.run.Mode == run.ModeSandbox && step.HasSideEffect())
}

// claimLoads is every step a claim may touch, for one read: the step, the
// outputs it reads and, when it finishes in the same transaction, its
// dependents with what they need and read.
func (s *runState) claimLoads(step *definition.Step, pure bool) []string {
	return s.e.claimLoadsOf(s.run.VersionID, s.def, step, pure)
}

// claimLoadsOf is claimLoads for a step of version versionID.
func (e *Service) claimLoadsOf(versionID string, def *definition.Definition, step *definition.Step, pure bool) []string {
	load := append([]string{step.ID}, def.Reads(step.ID)...)
	if pure {
		for _, dep := range e.dependentsOf(versionID, def)[step.ID] {
			d, _ := def.StepByID(dep)
			load = append(append(append(load, dep), d.Needs...), def.Reads(dep)...)
		}
	}
	return load
}

// claimStep marks the step's current attempt running, if it is due and not
// held by a live worker. It returns a nil job when there is nothing to do,
// and with it how long to wait first when the attempt is not due yet.
func (s *runState) claimStep(ctx context.Context, step *definition.Step, sr *ent.StepRun, pure bool) (*job, time.Duration, error) {
	c := s.c
	attemptID := *sr.CurrentAttemptID
	number := sr.Attempts // the current attempt is the step's latest
	var connID string     // the step's oauth2 connection (credwait.go)
	switch sr.Status {
	case steprun.StatusQueued, steprun.StatusWaiting:
		if sr.ReadyAt != nil && sr.ReadyAt.After(s.now) {
			// Delivered early: never run an attempt before it is due (a
			// retry's backoff or the server's Retry-After, a delay's end).
			if early := sr.ReadyAt.Sub(s.now); early <= maxEarlyWait {
				return nil, early, nil
			}
			return nil, 0, nil
		}
		if s.paused {
			// Held at the step boundary until resumeWorkflow sends it again.
			return nil, 0, nil
		}
		if sr.Status == steprun.StatusQueued && sr.ReadyAt == nil {
			// Held by fair dispatch (dispatch.go): its release sends it.
			return nil, 0, nil
		}
		if sr.Status == steprun.StatusWaiting && step.Type == definition.StepWait {
			// Its deadline, or a look at the stored events (wait.go).
			return nil, 0, s.wakeWait(ctx, step, sr)
		}
		if sr.Status == steprun.StatusWaiting && step.Type == definition.StepWorkflow {
			// Its child run may have finished (child.go).
			return nil, 0, s.wakeChild(ctx, step, sr)
		}
		if sr.Status == steprun.StatusQueued {
			// A tenant capped by maxConcurrentSteps: wait for a slot.
			if free, err := s.claimSlot(ctx, sr); err != nil || !free {
				return nil, 0, err
			}
			// A step that names a concurrency limit: wait for its turn.
			if free, err := s.claimLimit(ctx, step, sr, pure); err != nil || !free {
				return nil, 0, err
			}
			if handled, err := s.decide(ctx, step, sr); handled || err != nil {
				return nil, 0, err
			}
			sr = s.steps[step.ID]
		}
		// A connection that needs a person: the step waits (credwait.go).
		var handled bool
		var gateErr error
		if connID, handled, gateErr = s.credentialGate(ctx, step, sr); handled || gateErr != nil {
			return nil, 0, gateErr
		}
		sr = s.steps[step.ID]
	case steprun.StatusRunning:
		if step.Type == definition.StepMap {
			// Its claim committed with its items started: they run on
			// their own and the last one finishes it (mapstep.go).
			return nil, 0, nil
		}
		// Another worker holds it while its heartbeat is fresh. Past that,
		// the holder is presumed dead: run it again under the same attempt
		// (side effects carry the same idempotency key) and take over.
		if s.now.Sub(sr.UpdatedAt) < s.e.stale {
			return nil, 0, nil
		}
		if step.AtMostOnce() && !pure {
			// Its call may have been sent: never again (uncertain.go).
			if done, err := s.takeoverUncertain(ctx, step, sr, attemptID, number); err != nil || done {
				return nil, 0, err
			}
		}
		crashes, tooMany, err := s.crashedTooOften(ctx, sr)
		if err != nil {
			return nil, 0, err
		}
		if tooMany {
			return nil, 0, s.failCrashed(ctx, sr, crashes)
		}
		if err := s.setStep(ctx, sr, changeStep().SetUpdatedAt(s.now)); err != nil {
			return nil, 0, err
		}
		sr = s.steps[step.ID]
		s.emit(eventtype.StepReclaimed, step.ID, number, map[string]any{"attemptID": attemptID, "takeover": crashes})
	default:
		return nil, 0, nil
	}
	claimed := false
	if sr.Status != steprun.StatusRunning {
		claimed = true
		u := changeStep().SetStatus(steprun.StatusRunning)
		if sr.StartedAt == nil {
			u.SetStartedAt(s.now)
		}
		if step.Limit != "" && !pure {
			u.SetLimitName(step.Limit)
		}
		if pure {
			// Its result commits with its start: one write of the step
			// and of the attempt, when the result is recorded.
			if err := s.deferStep(sr, u); err != nil {
				return nil, 0, err
			}
		} else {
			if err := s.setStep(ctx, sr, u); err != nil {
				return nil, 0, err
			}
			if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusRunning).SetStartedAt(s.now), 1); err != nil {
				return nil, 0, err
			}
		}
		s.emit(eventtype.StepStarted, step.ID, number, map[string]any{"attemptID": attemptID, "type": step.Type})
		// A step is running, so the run is (what settle would conclude,
		// without counting the run's steps on every claim).
		s.setStatus(run.StatusRunning, nil)
	}
	j := &job{
		tenantID: s.run.TenantID, runID: s.run.ID, attemptID: attemptID, attempt: number, stepRunID: sr.ID, environmentID: s.run.EnvironmentID,
		step: step, env: s.expressionEnv(), idempotencyKey: idempotency.Key(s.run.ID, step.ID), claimed: claimed,
		finishLoads: s.claimLoads(step, true),
	}
	if s.run.Mode == run.ModeSandbox && !step.HasSideEffect() && s.e.sandbox != nil &&
		(step.Type == definition.StepLLM || step.Type == definition.StepHTTP) {
		plan, err := s.e.sandbox.StepPlan(ctx, c, s.run, step)
		if err != nil {
			return nil, 0, fmt.Errorf("sandbox plan of step %s: %w", step.ID, err)
		}
		if plan != nil && plan.Step != nil {
			step = plan.Step
			j.step = step
		}
		if plan != nil && plan.FromRecording {
			j.replayed, j.unrecorded = true, plan.Unrecorded
		}
	}
	if s.run.Mode == run.ModeSandbox && step.HasSideEffect() {
		j.replayed = true
	}
	if j.replayed {
		if j.unrecorded == "" && s.run.ReplayOf != nil {
			out, found, err := succeededOutput(ctx, s.run.TenantID, *s.run.ReplayOf, step.ID)
			if err != nil {
				return nil, 0, err
			}
			if found {
				j.recorded = decodeJSON(out)
			}
		}
	} else if step.Credential != "" {
		typ, secret, err := s.e.vault.OpenCredential(ctx, c, s.run.EnvironmentID, step.Credential)
		switch {
		case errs.CodeOf(err) == errs.NotFound:
			// Left nil: runStep fails the attempt permanently, naming it.
		case err != nil:
			return nil, 0, err
		default:
			j.credential = &steps.Credential{Type: string(typ), Secret: secret}
			if err := s.attachConnection(ctx, j, connID); err != nil {
				return nil, 0, err
			}
		}
	}
	if step.Type == definition.StepLLM && !j.replayed {
		if err := s.openFallbacks(ctx, step, j); err != nil {
			return nil, 0, err
		}
		j.runCost, j.maxRunCost = s.run.CostMicroUsd, s.def.MaxCostUSD
	}
	if step.Type == definition.StepLLM && !j.replayed && j.credential != nil {
		var err error
		if j.budget, j.budgetData, err = s.checkBudget(ctx, step, j.credential.Type); err != nil {
			return nil, 0, err
		}
	}
	j.started = s.now
	s.prepareResponseChecks(j)
	if pure {
		// Pure work (or a recorded output): it runs inside this transaction
		// and its result commits with its start, in one flush.
		j.state = s
		return j, 0, nil
	}
	return j, 0, s.flush(ctx)
}

// openFallbacks resolves an llm step's fallback credentials like its own:
// by name in the run's environment. One missing is left nil; the executor
// fails the step naming it if it comes to that fallback.
func (s *runState) openFallbacks(ctx context.Context, step *definition.Step, j *job) error {
	for _, f := range step.Fallbacks {
		fb := steps.Fallback{Name: f.Credential, Model: f.Model}
		if f.Credential == step.Credential && j.credential != nil {
			fb.Credential = j.credential
		} else {
			typ, secret, err := s.e.vault.OpenCredential(ctx, s.c, s.run.EnvironmentID, f.Credential)
			switch {
			case errs.CodeOf(err) == errs.NotFound:
			case err != nil:
				return err
			default:
				fb.Credential = &steps.Credential{Type: string(typ), Secret: secret}
			}
		}
		j.fallbacks = append(j.fallbacks, fb)
	}
	return nil
}

// transformBatch bounds how many ready transforms one transaction runs
// besides the one it was delivered for.
const transformBatch = 64

// runReadyTransforms runs, in the locked run's transaction, transforms of
// the run that were already ready when the lock was taken (a fan-out's
// siblings): each is claimed, evaluated and recorded as if delivered, and
// all commit together. Steps made ready by this transaction are left to
// the queue or the continuation: a step's result commits before any step
// that needs it starts. The siblings' own deliveries then find nothing to
// do (AttemptRef.CheckFirst).
func (e *Service) runReadyTransforms(ctx context.Context, s *runState, cont *AttemptRef) error {
	if s.terminal() || s.counts == nil || store.RepeatInGroup(ctx) {
		// In a group after another delivery of this run, the steps it made
		// ready are not committed yet: they run on their own deliveries.
		return nil
	}
	var fresh []string // made ready here
	for _, t := range s.tasks {
		if t.Kind == tasks.KindStep {
			fresh = append(fresh, t.StepID)
		}
	}
	if s.counts[string(steprun.StatusQueued)] <= len(fresh) {
		return nil
	}
	// Late ones run on their own delivery, outside (claimAttempt).
	list, err := readyTransformRows(ctx, s.run.TenantID, s.run.ID, s.lockedAt.Add(-lateDelivery), s.lockedAt, fresh, transformBatch)
	if err != nil {
		return fmt.Errorf("ready transforms: %w", err)
	}
	var load []string
	for _, sr := range list {
		if _, ok := s.steps[sr.StepID]; !ok {
			s.steps[sr.StepID] = sr
		}
		if step, ok := s.def.StepByID(sr.StepID); ok {
			load = append(load, s.claimLoads(step, true)...)
		}
	}
	if err := s.load(ctx, load...); err != nil {
		return err
	}
	for _, found := range list {
		step, ok := s.def.StepByID(found.StepID)
		sr := s.steps[found.StepID]
		if !ok || sr.Status != steprun.StatusQueued || sr.CurrentAttemptID == nil {
			continue
		}
		if s.terminal() {
			return nil
		}
		j, _, err := s.claimStep(ctx, step, sr, true)
		if err != nil {
			return err
		}
		if j == nil {
			continue
		}
		out, calls, execErr := e.runStep(ctx, j)
		if err := e.finishAttempt(ctx, j, out, calls, execErr, cont); err != nil {
			return err
		}
	}
	return nil
}

// runStep executes the step itself.
func (e *Service) runStep(ctx context.Context, j *job) (any, []steps.Call, error) {
	if j.budget != nil {
		return nil, nil, j.budget
	}
	if j.replayed {
		if j.recorded == nil {
			why := j.unrecorded
			if why == "" {
				why = "the source run has no recorded output for step " + j.step.ID
			}
			return nil, nil, &steps.Error{Class: steps.Permanent, Message: UnrecordedPrefix + why}
		}
		return j.recorded, nil, nil
	}
	switch j.step.Type {
	case definition.StepTransform:
		out, err := definition.EvalOutput(j.step.Path()+".output", j.step.Output, j.env)
		if err != nil {
			return nil, nil, &steps.Error{Class: exprClass(err), Message: "transform: " + err.Error()}
		}
		return out, nil, nil
	case definition.StepDelay:
		return map[string]any{"resumedAt": j.started.UTC().Format(time.RFC3339Nano)}, nil, nil
	case definition.StepMap:
		out, err := e.runMap(ctx, j)
		return out, nil, err
	case definition.StepHTTP, definition.StepLLM:
		if j.step.Credential != "" && j.credential == nil {
			return nil, nil, &steps.Error{Class: steps.Permanent, Message: fmt.Sprintf("credential %q is missing from the run's environment", j.step.Credential)}
		}
		if e.executor == nil {
			return nil, nil, &steps.Error{Class: steps.Permanent, Message: "this process cannot execute " + j.step.Type + " steps"}
		}
		ctx := steps.WithLimitScope(ctx, steps.LimitScope{TenantID: j.tenantID, EnvironmentID: j.environmentID, Credential: j.step.Credential, AttemptID: j.attemptID, WaitInProcess: j.waitForSlots})
		req := steps.Request{RunID: j.runID, StepID: j.step.ID, Attempt: j.attempt, Step: j.step, Env: j.env, Credential: j.credential, IdempotencyKey: j.idempotencyKey}
		if j.step.AtMostOnce() {
			req.BeforeSend = e.markSent(j)
		}
		if j.step.Type == definition.StepLLM {
			req.Fallbacks, req.BeforeModelCall = j.fallbacks, e.callBudget(j)
		}
		var res *steps.Result
		var err error
		if j.step.Type == definition.StepHTTP {
			req.Cache = e.responseCache(j)
			if res, err = e.executor.HTTP(ctx, req); err == nil {
				err = e.checkDrift(ctx, j, res.Output)
			}
		} else {
			res, err = e.executor.LLM(ctx, req)
		}
		if res == nil {
			return nil, nil, err
		}
		return res.Output, res.Calls, err
	}
	return nil, nil, &steps.Error{Class: steps.Permanent, Message: "step type " + j.step.Type + " cannot run on a worker"}
}

// finishAttempt records an attempt's result if it is still the step's
// current running attempt, then retries, fails or advances the run.
func (e *Service) finishAttempt(ctx context.Context, j *job, out any, calls []steps.Call, execErr error, continueWith *AttemptRef) error {
	c := ent.FromContext(ctx)
	s := j.state
	if s != nil {
		s.now = e.now() // the same transaction, a little later
	} else {
		var err error
		if s, err = e.lockRunSteps(ctx, c, j.runID, j.finishLoads...); err != nil {
			return err
		}
	}
	s.continueWith = continueWith
	sr := s.steps[j.step.ID]
	if sr == nil || sr.CurrentAttemptID == nil || *sr.CurrentAttemptID != j.attemptID || sr.Status != steprun.StatusRunning {
		return nil // fenced: another delivery already recorded this attempt
	}
	if err := s.recordDrift(ctx, j); err != nil {
		return err
	}
	if errors.Is(execErr, errMapItemsStarted) {
		return s.mapStarted(ctx, j, sr) // the map step runs on, item by item (mapstep.go)
	}
	callMaps := make([]map[string]any, 0, len(calls))
	for _, call := range calls {
		callMaps = append(callMaps, callToMap(call))
	}
	if d := deferralOf(execErr); d != nil {
		// Waits for a rate limit: no retry spent (deferral.go).
		if deferred, err := s.deferAttempt(ctx, j, sr, d, callMaps); deferred || err != nil {
			return err
		}
	}
	cost, err := s.priceCalls(ctx, j, callMaps, calls)
	if err != nil {
		return err
	}
	au := changeAttempt().SetFinishedAt(s.now).SetCalls(callMaps).SetCostMicroUsd(cost)
	if j.state != nil && j.claimed {
		au.SetStartedAt(j.started) // the claim left the attempt's start to this write
	}
	if cost > 0 {
		if err := s.setStep(ctx, sr, changeStep().AddCostMicroUsd(cost)); err != nil {
			return err
		}
		sr = s.steps[j.step.ID]
	}
	if lb := j.step.LatencyBudget.Duration; lb > 0 && !j.started.IsZero() {
		if took := s.now.Sub(j.started); took > lb {
			s.emit(eventtype.StepLatencyBudgetExceeded, j.step.ID, j.attempt, map[string]any{"budgetMs": lb.Milliseconds(), "durationMs": took.Milliseconds()})
		}
	}
	se := deliveryClass(j.step, j.replayed, steps.Classify(execErr))
	outcome := "succeeded"
	if execErr != nil {
		outcome = string(se.Class)
	}
	if !j.started.IsZero() {
		m, typ, secs := s.e.metrics, j.step.Type, s.now.Sub(j.started).Seconds()
		span := tracing.Attempt{TraceID: s.run.TraceID, RunID: s.run.ID, TenantID: s.run.TenantID, StepID: j.step.ID, StepType: j.step.Type,
			AttemptID: j.attemptID, Number: j.attempt, Start: j.started, End: s.now, Calls: callMaps}
		if execErr != nil {
			span.ErrorClass, span.ErrorMessage = string(se.Class), se.Message
		}
		tr := s.e.tracer
		s.afterCommit = append(s.afterCommit, func() {
			m.attempt(typ, outcome, secs)
			tr.RecordAttempt(span)
		})
	}
	var encoded []byte
	if execErr == nil {
		encoded = encodeJSON(out)
		if err := s.checkOutputSize(ctx, len(encoded)); err != nil {
			var limit *steps.Error
			if !errors.As(err, &limit) {
				return err
			}
			execErr, se, outcome = err, limit, string(limit.Class)
		}
	}
	if execErr == nil {
		if err := s.setAttempt(ctx, j.attemptID, au.SetStatus(stepattempt.StatusSucceeded), 1); err != nil {
			return err
		}
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(encoded).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
			return err
		}
		s.emit(eventtype.StepSucceeded, j.step.ID, j.attempt, map[string]any{"attemptID": j.attemptID})
		if err := s.advanceFrom(ctx, j.step.ID); err != nil {
			return err
		}
		return s.flush(ctx)
	}
	if se.Class == steps.Budget {
		s.emit(eventtype.BudgetExceeded, j.step.ID, j.attempt, j.budgetData)
	}
	if err := s.setAttempt(ctx, j.attemptID, au.SetStatus(stepattempt.StatusFailed).SetErrorClass(string(se.Class)).SetErrorMessage(se.Message), 1); err != nil {
		return err
	}
	if se.Class == steps.CredentialClass && !s.terminal() {
		// Its connection needs a person: wait for it (credwait.go).
		if err := s.credentialFailed(ctx, j, sr); err != nil {
			return err
		}
		return s.flush(ctx)
	}
	policy := j.step.RetryPolicy()
	if se.Class == steps.Transient && sr.Attempts < policy.MaxAttempts && !s.terminal() {
		delay := policy.Backoff(sr.Attempts, nil)
		if se.RetryAfter > delay {
			delay = se.RetryAfter
		}
		at := s.now.Add(delay)
		s.emit(eventtype.StepRetrying, j.step.ID, j.attempt, map[string]any{"class": string(se.Class), "message": se.Message, "delayMs": delay.Milliseconds(), "nextAttempt": sr.Attempts + 1})
		if err := s.scheduleAttempt(ctx, sr, at); err != nil {
			return err
		}
		return s.flush(ctx)
	}
	if se.Class == steps.Uncertain {
		if err := s.settleUncertain(ctx, j.step, sr, j.attemptID, j.attempt, se.Message); err != nil {
			return err
		}
		return s.flush(ctx)
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(string(se.Class)).SetErrorMessage(se.Message).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, j.step.ID, j.attempt, map[string]any{"class": string(se.Class), "message": se.Message, "attemptID": j.attemptID})
	if err := s.failRun(ctx, j.step.ID, string(se.Class), se.Message); err != nil {
		return err
	}
	return s.flush(ctx)
}

// exprClass is the failure class of an expression's error: `limit` when it
// passed a cap, `permanent` otherwise (it would fail the same way again).
func exprClass(err error) steps.Class {
	if errors.Is(err, definition.ErrLimit) {
		return steps.Limit
	}
	return steps.Permanent
}

// MaxRunOutputBytes bounds the step outputs one run stores in total; each
// step output is bounded by definition.MaxBytes.
const MaxRunOutputBytes = 64 << 20

// runOutputCheckFrom is the output size from which a step's output is
// checked against the run's total: smaller ones (nearly all) skip the
// query, which lets a run exceed MaxRunOutputBytes by at most this much per
// step (a definition has at most 1,000 steps: 64 MiB more).
const runOutputCheckFrom = 64 << 10

// checkOutputSize refuses a step output over definition.MaxBytes, or one
// that would take the run's stored outputs past MaxRunOutputBytes.
func (s *runState) checkOutputSize(ctx context.Context, n int) error {
	if n > definition.MaxBytes {
		return &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("step output is %d bytes, more than the %d MiB a step output may store", n, definition.MaxBytes>>20)}
	}
	if n < runOutputCheckFrom {
		return nil
	}
	total, err := storedOutputBytes(ctx, s.run.TenantID, s.run.ID)
	if err != nil {
		return fmt.Errorf("run output size: %w", err)
	}
	if total+int64(n) > MaxRunOutputBytes {
		return &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("the run's step outputs would take more than %d MiB", MaxRunOutputBytes>>20)}
	}
	return nil
}

func callToMap(c steps.Call) map[string]any {
	b := encodeJSON(c)
	m, _ := decodeJSON(b).(map[string]any)
	return m
}
