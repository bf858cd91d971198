package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Workflow steps start a run of another workflow (a child run) and wait
// for it.
//
// The worker that claims the step's attempt (decide) evaluates its input,
// checks it against the input schema of the version of the workflow
// deployed in the run's environment and creates the child in the same
// transaction, with the idempotency key child:<run>:<step>:<attempt> (a
// retried claim finds the child it created). The step then waits, its
// attempt current, with no ready_at.
//
// Locks are taken parent before child, never the other way: a parent's
// cancel or failure cancels its children with its own lock held
// (cancelChildren), and a child finishing does not lock its parent. Its
// flush reads the parent step's current attempt and sends the step's task
// after commit (notifyParent); the claim of that attempt reads the child
// and, once it is terminal, finishes the step with the child's output or
// failure (wakeChild). The task is a wake-up only: the reconciler finds
// waiting workflow steps whose current child is terminal in Postgres
// (dueChildSteps) and sends it again, so a lost task (a worker killed, Redis
// wiped) delays the step by a reconcile period, no more.

// childKey is the idempotency key of the child run of a workflow step's
// attempt.
func childKey(runID, stepID string, attempt int) string {
	return "child:" + runID + ":" + stepID + ":" + strconv.Itoa(attempt)
}

// beginChild starts a workflow step's child run, on the worker that
// claimed its decision attempt (the run locked).
func (s *runState) beginChild(ctx context.Context, sr *ent.StepRun, step *definition.Step) error {
	if s.run.Mode == run.ModeSandbox {
		// A rehearsal starts no run: the source run's recorded output.
		return s.replayWait(ctx, sr, step)
	}
	s.markStarted()
	if s.run.Depth >= definition.MaxRunDepth {
		return s.failStepNow(ctx, sr, steps.Permanent, fmt.Sprintf("%s: this run is at depth %d; a child run would be at depth %d, and runs nest at most %d deep",
			step.Path()+".workflow", s.run.Depth, s.run.Depth+1, definition.MaxRunDepth))
	}
	if err := s.load(ctx, s.def.Reads(step.ID)...); err != nil {
		return err
	}
	input, err := definition.EvalChildInput(step.Path()+".input", step.Input, s.expressionEnv())
	if err != nil {
		return s.failStepNow(ctx, sr, exprClass(err), "evaluate input: "+err.Error())
	}
	// As a caller's input arrives: plain JSON, numbers exact.
	input, err = plainJSONObject(input)
	if err != nil {
		return s.failStepNow(ctx, sr, steps.Permanent, fmt.Sprintf("%s: %v", step.Path()+".input", err))
	}
	key := childKey(s.run.ID, step.ID, sr.Attempts)
	child, err := s.c.Run.Query().Where(run.IdempotencyKey(key)).Only(ctx)
	switch {
	case ent.IsNotFound(err):
		var failed string
		if child, failed, err = s.createChild(ctx, step, input, key); err != nil {
			return err
		}
		if failed != "" {
			return s.failStepNow(ctx, sr, steps.Permanent, failed)
		}
	case err != nil:
		return fmt.Errorf("child run of step %s: %w", step.ID, err)
	}
	attemptID := *sr.CurrentAttemptID
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusRunning).SetStartedAt(s.now), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusWaiting).SetStartedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepWaiting, sr.StepID, sr.Attempts, map[string]any{"childRunID": child.ID, "workflowID": step.Workflow})
	return nil
}

// createChild creates the child run of a workflow step; failed says why
// it cannot (no deployed version, an input its schema refuses).
func (s *runState) createChild(ctx context.Context, step *definition.Step, input map[string]any, key string) (*ent.Run, string, error) {
	dep, err := s.c.Deployment.Query().
		Where(deployment.WorkflowID(step.Workflow), deployment.EnvironmentID(s.run.EnvironmentID), deployment.Active(true)).
		Only(ctx)
	if ent.IsNotFound(err) {
		return nil, fmt.Sprintf("%s: workflow %q has no version deployed in the run's environment", step.Path()+".workflow", step.Workflow), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("deployment of %s: %w", step.Workflow, err)
	}
	def, err := s.e.definitionOf(ctx, s.c, dep.VersionID)
	if err != nil {
		return nil, "", err
	}
	if err := def.ValidateInput(input); err != nil {
		return nil, fmt.Sprintf("%s: the input does not match the input schema of workflow %q: %v", step.Path()+".input", step.Workflow, err), nil
	}
	runID, stepID := s.run.ID, step.ID
	v := &viewer.Viewer{TenantID: s.run.TenantID, Subject: "run:" + s.run.ID, System: true}
	child, err := s.e.createRun(ctx, s.c, v, newRun{
		workflowID: step.Workflow, versionID: dep.VersionID, environmentID: s.run.EnvironmentID,
		input: input, hash: inputHash(input), idempotencyKey: &key, mode: run.ModeLive, def: def,
		parentRunID: &runID, parentStepID: &stepID, depth: s.run.Depth + 1,
		varsVersion: s.run.EnvVarsVersion, // the same environment, the parent's values
		priority:    s.run.Priority,
	})
	if err != nil {
		return nil, "", fmt.Errorf("start child run: %w", err)
	}
	return child, "", nil
}

// plainJSONObject is v as JSON decodes it, numbers as json.Number.
func plainJSONObject(v map[string]any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var out map[string]any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// wakeChild handles the task of a waiting workflow step: once the child
// run of its current attempt is terminal, the step succeeds with the
// child's output or fails with its class, and the child's cost is added to
// the step's and the run's.
func (s *runState) wakeChild(ctx context.Context, step *definition.Step, sr *ent.StepRun) error {
	child, err := s.c.Run.Query().Where(run.IdempotencyKey(childKey(s.run.ID, step.ID, sr.Attempts))).Only(ctx)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("child run of step %s: %w", step.ID, err)
	}
	switch child.Status {
	case run.StatusSucceeded, run.StatusFailed, run.StatusCancelled:
	default:
		return nil
	}
	attemptID := *sr.CurrentAttemptID
	cost := child.CostMicroUsd
	if cost > 0 {
		s.update.AddCostMicroUsd(cost)
		s.dirty = true
	}
	au := changeAttempt().SetFinishedAt(s.now).SetCostMicroUsd(cost)
	if child.Status == run.StatusSucceeded {
		// The output as stored: exact numbers.
		out, _, err := runOutputRaw(ctx, child.ID)
		if err != nil {
			return err
		}
		if len(out) == 0 {
			out = json.RawMessage("null")
		}
		if err := s.setAttempt(ctx, attemptID, au.SetStatus(stepattempt.StatusSucceeded), 1); err != nil {
			return err
		}
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(out).AddCostMicroUsd(cost).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
			return err
		}
		s.emit(eventtype.StepSucceeded, sr.StepID, sr.Attempts, map[string]any{"attemptID": attemptID, "childRunID": child.ID})
		return s.advanceFrom(ctx, sr.StepID)
	}
	class := string(steps.Permanent)
	if child.ErrorClass != nil && *child.ErrorClass != "" {
		class = *child.ErrorClass
	}
	msg := fmt.Sprintf("child run %s of workflow %s %s", child.ID, child.WorkflowID, child.Status)
	if child.ErrorMessage != nil && *child.ErrorMessage != "" {
		msg += ": " + *child.ErrorMessage
	}
	if err := s.setAttempt(ctx, attemptID, au.SetStatus(stepattempt.StatusFailed).SetErrorClass(class).SetErrorMessage(msg), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).AddCostMicroUsd(cost).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, sr.Attempts, map[string]any{"class": class, "message": msg, "attemptID": attemptID, "childRunID": child.ID})
	return s.failRun(ctx, sr.StepID, class, msg)
}

// runOutputRaw reads a run's output as stored.
func runOutputRaw(ctx context.Context, runID string) (json.RawMessage, bool, error) {
	var out []byte
	found, err := scalar(ctx, &out, `SELECT output FROM runs WHERE id = $1`, runID)
	return out, found, err
}

// notifyParent, in the flush of a child run that has just finished, sends
// its parent's workflow step a task, if the step still waits; it reads the
// parent step without locking the parent run.
func (s *runState) notifyParent(ctx context.Context) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	var attemptID *string
	var status string
	err = q.QueryRow(ctx, `SELECT current_attempt_id, status FROM step_runs WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3`,
		s.run.TenantID, *s.run.ParentRunID, *s.run.ParentStepID).Scan(&attemptID, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("parent step: %w", err)
	}
	if attemptID == nil || steprun.Status(status) != steprun.StatusWaiting {
		return nil
	}
	t := stepTask(s.run.TenantID, *s.run.ParentRunID, *s.run.ParentStepID, definition.StepWorkflow, *attemptID, s.now)
	t.Variant = "c" + s.run.ID
	s.tasks = append(s.tasks, t)
	return nil
}

// cancelChildren cancels the run's children that are not finished, with
// the run locked (parent before child), each with its own children.
func (s *runState) cancelChildren(ctx context.Context) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	rows, err := q.Query(ctx, `SELECT id FROM runs WHERE tenant_id = $1 AND parent_run_id = $2 AND status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY id`,
		s.run.TenantID, s.run.ID)
	if err != nil {
		return fmt.Errorf("children: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("children: %w", err)
	}
	for _, id := range list {
		cs, err := s.e.lockRun(ctx, s.c, id)
		if err != nil {
			return fmt.Errorf("lock child run %s: %w", id, err)
		}
		if err := cs.cancel(ctx, "parent run "+s.run.ID+" stopped", map[string]any{"parentRunID": s.run.ID}); err != nil {
			return err
		}
	}
	return nil
}

// cancel cancels a locked run that is not finished: its queued and
// waiting steps (and children), its pending ones, then the run.
func (s *runState) cancel(ctx context.Context, message string, data map[string]any) error {
	if s.terminal() {
		return nil
	}
	if err := s.stopPending(ctx, steprun.StatusCancelled); err != nil {
		return err
	}
	for _, sr := range s.steps {
		if sr.Status == steprun.StatusPending {
			if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusCancelled)); err != nil {
				return err
			}
		}
	}
	s.update.SetErrorClass("cancelled").SetErrorMessage(message)
	s.setStatus(run.StatusCancelled, data)
	return s.flush(ctx)
}

// dueChildStepsSQL reads a tenant's workflow steps still waiting on a
// child run of their current attempt that finished before $2 (dueRows):
// the task telling the parent was lost.
const dueChildStepsSQL = `SELECT s.run_id, s.step_id, s.type, s.current_attempt_id, s.updated_at FROM step_runs s
		JOIN runs c ON c.tenant_id = s.tenant_id AND c.idempotency_key = 'child:' || s.run_id || ':' || s.step_id || ':' || s.attempts
		WHERE s.tenant_id = $1 AND s.status = 'waiting' AND s.type = 'workflow' AND s.current_attempt_id IS NOT NULL
			AND c.status IN ('succeeded', 'failed', 'cancelled') AND c.finished_at <= $2
			AND ` + notPausedStepS + `
		LIMIT 1000`
