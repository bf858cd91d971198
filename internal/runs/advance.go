package runs

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/tasks"
)

// advance moves the run forward after any change: pending steps whose needs
// are all done are skipped (false `if`) or scheduled, approvals are opened,
// and the run's status follows its steps. It is idempotent. It considers
// every step, so the run's steps must all be loaded (lockRun).
func (s *runState) advance(ctx context.Context) error {
	if s.terminal() {
		return nil
	}
	for _, id := range s.def.TopoOrder() {
		if _, err := s.tryStart(ctx, id); err != nil || s.terminal() {
			return err
		}
	}
	return s.settle(ctx)
}

// advanceFrom is advance after the given steps finished, looking only at
// their dependents (and, through skipped steps, theirs): a step finishing
// costs the size of its neighbourhood, not of the run.
func (s *runState) advanceFrom(ctx context.Context, finished ...string) error {
	if s.terminal() {
		return nil
	}
	queue := append([]string(nil), finished...)
	seen := map[string]bool{}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		for _, dep := range s.e.dependentsOf(s.run.VersionID, s.def)[id] {
			if seen[dep] {
				continue
			}
			seen[dep] = true
			step, _ := s.def.StepByID(dep)
			load := append([]string{dep}, step.Needs...)
			if err := s.load(ctx, append(load, s.def.Reads(dep)...)...); err != nil {
				return err
			}
			skipped, err := s.tryStart(ctx, dep)
			if err != nil || s.terminal() {
				return err
			}
			if skipped {
				queue = append(queue, dep)
			}
		}
	}
	return s.settle(ctx)
}

// tryStart starts a pending step whose needs are done: it is skipped when
// its `if` is false (reported), or scheduled.
func (s *runState) tryStart(ctx context.Context, id string) (skipped bool, err error) {
	sr := s.steps[id]
	if sr == nil || sr.Status != steprun.StatusPending {
		return false, nil
	}
	step, _ := s.def.StepByID(id)
	if !s.needsDone(step) {
		return false, nil
	}
	if step.If != "" || (s.deferEval && startEvaluates(step)) {
		// Tenant expressions run on workers only: the step is queued, and
		// the worker that claims it evaluates its `if` (and an approval's
		// message, a delay's until) before anything else (decide).
		return false, s.scheduleAttemptAs(ctx, sr, s.now, steprun.StatusQueued)
	}
	switch step.Type {
	case definition.StepApproval:
		return false, s.openApproval(ctx, sr, step)
	case definition.StepDelay:
		return false, s.scheduleDelay(ctx, sr, step)
	case definition.StepWait:
		// A worker starts it: it evaluates the match against stored
		// events (wait.go).
		return false, s.scheduleAttemptAs(ctx, sr, s.now, steprun.StatusQueued)
	default:
		return false, s.scheduleAttempt(ctx, sr, s.now)
	}
}

// needsDone reports whether every need of step succeeded or was skipped.
func (s *runState) needsDone(step *definition.Step) bool {
	for _, n := range step.Needs {
		sr := s.steps[n]
		if sr == nil || (sr.Status != steprun.StatusSucceeded && sr.Status != steprun.StatusSkipped) {
			return false
		}
	}
	return true
}

// startEvaluates reports whether starting a step evaluates an expression
// besides its `if`: an approval's templated message, a delay's until.
func startEvaluates(step *definition.Step) bool {
	switch step.Type {
	case definition.StepApproval:
		return strings.Contains(step.Message, "{{")
	case definition.StepDelay:
		return step.Until != ""
	}
	return false
}

// scheduleAttempt creates the next attempt of a step, due at `at`: queued,
// or waiting for a delay.
func (s *runState) scheduleAttempt(ctx context.Context, sr *ent.StepRun, at time.Time) error {
	status := steprun.StatusQueued
	if step, _ := s.def.StepByID(sr.StepID); step != nil && step.Type == definition.StepDelay {
		status = steprun.StatusWaiting
	}
	return s.scheduleAttemptAs(ctx, sr, at, status)
}

// scheduleAttemptAs is scheduleAttempt with the step's status given.
func (s *runState) scheduleAttemptAs(ctx context.Context, sr *ent.StepRun, at time.Time, status steprun.Status) error {
	n := sr.Attempts + 1
	att := newAttempt(s.run.TenantID, s.run.ID, sr, n, at, s.now)
	attemptID := att.ID
	if err := insertAttempt(ctx, att); err != nil {
		return fmt.Errorf("create attempt: %w", err)
	}
	if err := s.setStep(ctx, sr, changeStep().
		SetStatus(status).
		SetAttempts(n).
		SetCurrentAttemptID(attemptID).
		SetReadyAt(at).
		ClearErrorClass().ClearErrorMessage()); err != nil {
		return err
	}
	t := stepTask(s.run.TenantID, s.run.ID, sr.StepID, sr.Type, attemptID, at)
	t.VersionID = s.run.VersionID
	s.tasks = append(s.tasks, t)
	return nil
}

// scheduleDelay waits for the step's duration (or until its `until`
// timestamp) by scheduling its attempt then.
func (s *runState) scheduleDelay(ctx context.Context, sr *ent.StepRun, step *definition.Step) error {
	s.markStarted()
	at := s.now.Add(step.Duration.Duration)
	if step.Until != "" {
		v, err := definition.Eval(step.Path()+".until", step.Until, s.expressionEnv())
		if err != nil {
			return s.failStepNow(ctx, sr, exprClass(err), "evaluate until: "+err.Error())
		}
		str, _ := v.(string)
		t, err := time.Parse(time.RFC3339, str)
		if err != nil {
			return s.failStepNow(ctx, sr, steps.Permanent, fmt.Sprintf("%s: until must give an RFC 3339 timestamp, got %.200v", step.Path(), v))
		}
		at = t.UTC()
	}
	if err := s.scheduleAttempt(ctx, sr, at); err != nil {
		return err
	}
	s.emit(eventtype.StepWaiting, sr.StepID, s.steps[sr.StepID].Attempts, map[string]any{"until": at.Format(time.RFC3339Nano)})
	return nil
}

// markStarted starts the run when its first work is a wait (approval or
// delay), so run.started precedes the wait's events.
func (s *runState) markStarted() {
	if s.run.StartedAt == nil {
		s.setStatus(run.StatusRunning, nil)
	}
}

// failStepNow fails a step before any attempt ran (or its decision, see
// decide), and the run.
func (s *runState) failStepNow(ctx context.Context, sr *ent.StepRun, class steps.Class, msg string) error {
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(string(class)).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	if err := s.endDecision(ctx, sr, stepattempt.StatusFailed); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, 0, map[string]any{"class": string(class), "message": msg})
	return s.failRun(ctx, sr.StepID, string(class), msg)
}

// openApproval creates the approval request an operator decides, with the
// context they need, and schedules its timeout.
func (s *runState) openApproval(ctx context.Context, sr *ent.StepRun, step *definition.Step) error {
	s.markStarted()
	env := s.expressionEnv()
	msg := step.Message
	if msg != "" {
		m, err := definition.Interpolate(step.Path()+".message", msg, env)
		if err != nil {
			return s.failStepNow(ctx, sr, exprClass(err), "render approval message: "+err.Error())
		}
		msg = m
	}
	needs := map[string]any{}
	for _, n := range step.Needs {
		if st, ok := env.Steps[n]; ok {
			needs[n] = st
		}
	}
	apr := &ent.ApprovalRequest{ID: ids.New(ids.ApprovalRequest), TenantID: s.run.TenantID, CreatedAt: s.now, UpdatedAt: s.now,
		RunID: s.run.ID, StepID: sr.StepID, StepRunID: sr.ID, Status: approvalrequest.StatusPending, Message: msg,
		Context:   map[string]any{"input": s.run.Input, "steps": needs, "workflowID": s.run.WorkflowID, "versionID": s.run.VersionID},
		OnTimeout: approvalrequest.OnTimeout(step.TimeoutAction())}
	if step.Approvers != nil {
		apr.ApproverRoles, apr.ApproverSubjects = step.Approvers.Roles, step.Approvers.Subjects
	}
	var expires *time.Time
	if step.Timeout.Duration > 0 {
		t := s.now.Add(step.Timeout.Duration)
		expires = &t
		apr.ExpiresAt = expires
	}
	if err := insertApproval(ctx, apr); err != nil {
		return fmt.Errorf("create approval: %w", err)
	}
	if err := s.endDecision(ctx, sr, stepattempt.StatusSucceeded); err != nil {
		return err
	}
	// An approval waits on people, not on a task: no attempt is current.
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusWaiting).SetStartedAt(s.now).SetAttempts(1).ClearCurrentAttemptID().ClearReadyAt()); err != nil {
		return err
	}
	data := map[string]any{"approvalID": apr.ID, "message": msg}
	if expires != nil {
		data["expiresAt"] = expires.Format(time.RFC3339Nano)
		s.tasks = append(s.tasks, tasks.Task{Kind: tasks.KindApprovalTimeout, TenantID: s.run.TenantID, RunID: s.run.ID, ID: apr.ID, At: *expires})
	}
	s.emit(eventtype.ApprovalRequested, sr.StepID, 0, data)
	return s.startEscalation(ctx, step, apr.ID, msg)
}

// settle derives the run's status from its steps, finishing it when every
// step is done. Counts come from the database, so it works whichever steps
// are loaded.
func (s *runState) settle(ctx context.Context) error {
	if s.terminal() {
		return nil
	}
	counts, err := s.stepCounts(ctx)
	if err != nil {
		return err
	}
	var active, waiting, done, started int
	for status, n := range counts {
		switch steprun.Status(status) {
		case steprun.StatusRunning:
			active += n
			started += n
		case steprun.StatusQueued:
			active += n
		case steprun.StatusWaiting:
			waiting += n
		case steprun.StatusSucceeded, steprun.StatusSkipped:
			done += n
		}
	}
	switch {
	case done == len(s.def.Steps):
		// Only a worker gets here with an output expression to evaluate:
		// API requests leave every step they start queued or waiting
		// (decide.go), and resumeRun refuses runs that failed at the output.
		// The output needs the outputs it reads, or every step's.
		if ids, ok := s.def.OutputReads(); ok {
			if err := s.load(ctx, ids...); err != nil {
				return err
			}
		} else if err := s.loadAll(ctx); err != nil {
			return err
		}
		out, err := s.runOutput()
		if err != nil {
			return s.failRun(ctx, "", string(exprClass(err)), "evaluate output: "+err.Error())
		}
		enc := encodeJSON(out)
		if len(enc) > definition.MaxBytes {
			return s.failRun(ctx, "", string(steps.Limit), fmt.Sprintf("the run's output is %d bytes, more than the %d MiB it may store", len(enc), definition.MaxBytes>>20))
		}
		s.update.SetOutput(enc)
		if s.run.StartedAt == nil {
			s.setStatus(run.StatusRunning, nil)
		}
		s.setStatus(run.StatusSucceeded, nil)
	case started > 0 || (active > 0 && s.run.StartedAt != nil):
		s.setStatus(run.StatusRunning, nil)
	case waiting > 0 && active == 0:
		if s.run.StartedAt == nil {
			s.setStatus(run.StatusRunning, nil)
		}
		s.setStatus(run.StatusWaiting, nil)
	}
	return nil
}

// stepCounts is how many of the run's steps are in each status. The run row
// keeps them (step_counts), updated with every step change; a run whose
// counts are missing (created before they were kept) is counted once from
// its steps, and keeps them from then on.
func (s *runState) stepCounts(ctx context.Context) (map[string]int, error) {
	if s.counts != nil {
		return s.counts, nil
	}
	counts, err := countSteps(ctx, s.run.TenantID, s.run.ID)
	if err != nil {
		return nil, fmt.Errorf("count steps: %w", err)
	}
	s.counts = counts
	s.countsChanged, s.dirty = true, true
	return s.counts, nil
}

// runOutput evaluates the definition's output, or collects every step output.
func (s *runState) runOutput() (any, error) {
	env := s.expressionEnv()
	if s.def.Output == "" {
		out := map[string]any{}
		for id, st := range env.Steps {
			out[id] = st.(map[string]any)["output"]
		}
		return out, nil
	}
	return definition.Eval("$.output", s.def.Output, env)
}
