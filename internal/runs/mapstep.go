package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Map steps run an inner step once per item of a list.
//
// The map step's claim (a worker, inside the claim's transaction: no I/O)
// evaluates `items`. A transform inner step is evaluated for every item
// right there and the map step finishes at once. An http inner step makes
// each item a map_items row, its own unit of work: the first `concurrency`
// items are due at once and the rest wait for a slot; the map step stays
// running (with no ready_at, so the reconciler does not take it for a
// silent step). An item's claim locks only its row (claimItem), so items run
// in parallel across workers; recording its result (finishItem) locks the
// run first and then the item (the order every run lock holder that
// touches items follows: cancel, fail, resume), starts the next waiting
// item, and the item that leaves none in flight finishes the map step.

// errMapItemsStarted is runMap's answer when the items are units of work
// of their own: the map step is running, not finished.
var errMapItemsStarted = errors.New("map items started")

// mapItemError is the output entry of a failed item under the continue
// failure policy.
func mapItemError(class, message string) map[string]any {
	return map[string]any{"error": map[string]any{"class": class, "message": message}}
}

// runMap evaluates a map step's items (in its claim's transaction) and
// either returns the output of a transform map or starts the items.
func (e *Service) runMap(ctx context.Context, j *job) (any, error) {
	s, step := j.state, j.step
	if s == nil || step.Step == nil {
		return nil, &steps.Error{Class: steps.Permanent, Message: "map step " + step.ID + " has no inner step"}
	}
	if step.MapRunsItems() {
		// A resume: the items exist; only the failed and cancelled ones run again.
		resumed, err := restartMapItems(ctx, s.run.TenantID, s.run.ID, step.ID, s.now)
		if err != nil {
			return nil, err
		}
		if resumed {
			inFlight, waiting, err := s.startMapItems(ctx, step)
			if err != nil {
				return nil, err
			}
			if inFlight > 0 || waiting > 0 {
				return nil, errMapItemsStarted
			}
			// Every item had succeeded (the map step was stopped while its
			// last ones ran, or failed at its output): it ends now.
			out, _, failed, err := s.mapOutput(ctx, step, nil)
			if err != nil {
				return nil, err
			}
			if failed != nil {
				return nil, failed
			}
			return out, nil
		}
	}
	v, err := definition.Eval(step.Path()+".items", step.Items, j.env)
	if err != nil {
		return nil, &steps.Error{Class: exprClass(err), Message: "map items: " + err.Error()}
	}
	list, ok := v.([]any)
	if !ok {
		return nil, &steps.Error{Class: steps.Permanent, Message: fmt.Sprintf("map items: %q gave %s, not a list", step.Items, describeValue(v))}
	}
	if len(list) > definition.MaxMapItems {
		return nil, &steps.Error{Class: steps.Permanent, Message: fmt.Sprintf("map items: the list has %d items; a map step takes at most %d", len(list), definition.MaxMapItems)}
	}
	if !step.MapRunsItems() {
		return mapTransform(step, j.env, list)
	}
	if len(list) == 0 {
		return []any{}, nil
	}
	if err := insertMapItems(ctx, s.run.TenantID, s.run.ID, step.ID, list, s.now); err != nil {
		return nil, err
	}
	if _, _, err := s.startMapItems(ctx, step); err != nil {
		return nil, err
	}
	return nil, errMapItemsStarted
}

// maxMapTransformTime bounds how long a map of transforms may evaluate in
// its claim's transaction, which holds the run's lock: each item's
// evaluation is bounded (definition.EvalTimeout), not their number.
const maxMapTransformTime = 10 * time.Second

// mapTransform evaluates a transform inner step for every item. The
// outputs together are bounded like one step output (definition.MaxBytes),
// counted as they are made.
func mapTransform(step *definition.Step, env definition.Env, list []any) (any, error) {
	out := make([]any, len(list))
	size, begin := 2, time.Now()
	for i, item := range list {
		if i%100 == 99 && time.Since(begin) > maxMapTransformTime {
			return nil, &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("map items: evaluating %d items took more than %s (limit exceeded at item %d)", len(list), maxMapTransformTime, i)}
		}
		env.Item, env.Index = item, int64(i)
		v, err := definition.EvalOutput(step.Step.Path()+".output", step.Step.Output, env)
		if err == nil {
			if size += len(encodeJSON(v)) + 1; size > definition.MaxBytes {
				return nil, &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("map items: the outputs up to item %d take more than the %d MiB a step output may store", i, definition.MaxBytes>>20)}
			}
		}
		if err != nil {
			class := exprClass(err)
			if step.MapFailurePolicy() == definition.MapContinue {
				out[i] = mapItemError(string(class), "transform: "+err.Error())
				continue
			}
			return nil, &steps.Error{Class: class, Message: fmt.Sprintf("map item %d: transform: %v", i, err)}
		}
		out[i] = v
	}
	return out, nil
}

func describeValue(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "a map"
	case string:
		return "a string"
	case bool:
		return "a bool"
	case int64, float64:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

// mapStarted records a map step whose items now run on their own: the
// claim's deferred start is written, the step keeps running without a
// ready_at (it is not a silent step for the reconciler).
func (s *runState) mapStarted(ctx context.Context, j *job, sr *ent.StepRun) error {
	if err := s.setStep(ctx, sr, changeStep().ClearReadyAt()); err != nil {
		return err
	}
	if err := s.setAttempt(ctx, j.attemptID, changeAttempt().SetStatus(stepattempt.StatusRunning).SetStartedAt(j.started), 1); err != nil {
		return err
	}
	return s.flush(ctx)
}

// startMapItems makes waiting items due, up to the step's concurrency in
// flight, and queues their tasks (sent after commit). It returns how many
// items are in flight and waiting once they are.
func (s *runState) startMapItems(ctx context.Context, step *definition.Step) (inFlight, waiting int, err error) {
	inFlight, waiting, started, err := settleMapItems(ctx, s.run.TenantID, s.run.ID, step.ID, step.MapConcurrency(), s.now)
	if err != nil {
		return 0, 0, err
	}
	for _, it := range started {
		s.tasks = append(s.tasks, mapItemTask(s.run.TenantID, s.run.ID, step.ID, it.id, strconv.Itoa(it.attempts+1), s.now))
	}
	return inFlight, waiting, nil
}

func mapItemTask(tenantID, runID, stepID, itemID, variant string, at time.Time) tasks.Task {
	return tasks.Task{Kind: tasks.KindMapItem, TenantID: tenantID, RunID: runID, StepID: stepID, ID: itemID, Variant: variant, At: at}
}

// itemJob is what an item's attempt needs once its claim has committed.
type itemJob struct {
	id, runID, stepID string
	index, attempt    int
	job               *job
	// crashed: the item's holders went silent this many times, the crash
	// limit: it fails (class crashed) instead of running again.
	crashed int
}

// ExecuteMapItem runs one attempt of a map item: claimed under the item's
// row lock, executed outside any transaction (with heartbeats), recorded
// under the run's lock. A late or duplicate delivery changes nothing.
func (e *Service) ExecuteMapItem(ctx context.Context, tenantID, runID, itemID string) error {
	ctx = store.GenericPlans(viewer.SystemContext(ctx, tenantID))
	var it *itemJob
	for try := 0; ; try++ {
		var early time.Duration
		err := store.InTenant(ctx, e.client, func(ctx context.Context) error {
			var err error
			it, early, err = e.claimItem(ctx, tenantID, runID, itemID)
			return err
		})
		if err != nil {
			return err
		}
		if early <= 0 || try == 2 {
			break
		}
		select {
		case <-time.After(early):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if it == nil {
		return nil
	}
	if it.crashed > 0 {
		msg := fmt.Sprintf("the item's worker stopped responding %d times while running it (crash limit %d); it is not run again", it.crashed, e.crashLimit)
		return e.stepTx(context.WithoutCancel(ctx), runID, func(ctx context.Context) error {
			return e.finishItem(ctx, it, nil, nil, &steps.Error{Class: steps.Crashed, Message: msg})
		})
	}
	stop := e.itemHeartbeat(ctx, it)
	out, calls, execErr := e.runStep(ctx, it.job)
	stop()
	if ctx.Err() != nil {
		return ctx.Err() // left running: redelivered, or taken over once silent
	}
	return e.stepTx(context.WithoutCancel(ctx), runID, func(ctx context.Context) error {
		return e.finishItem(ctx, it, out, calls, execErr)
	})
}

// claimItem marks an item running if it is due (or its holder went
// silent) and gathers what its attempt needs.
func (e *Service) claimItem(ctx context.Context, tenantID, runID, itemID string) (*itemJob, time.Duration, error) {
	row, found, err := lockMapItem(ctx, tenantID, itemID)
	if err != nil || !found {
		return nil, 0, err
	}
	now := e.now()
	takeover := false
	switch row.status {
	case "queued":
		if row.readyAt == nil {
			return nil, 0, nil // waiting for a slot
		}
		if row.readyAt.After(now) {
			if early := row.readyAt.Sub(now); early <= maxEarlyWait {
				return nil, early, nil
			}
			return nil, 0, nil
		}
		row.attempts++
	case "running":
		if now.Sub(row.updatedAt) < e.stale {
			return nil, 0, nil // its holder is alive
		}
		// Its worker went silent: run the same attempt again, under the
		// same idempotency key, unless that makes the crash limit (an item
		// that kills its worker is not run forever); counted in the row,
		// so a Redis wipe does not reset it.
		if silences := row.takeovers + 1; silences >= e.crashLimit {
			return &itemJob{id: itemID, runID: row.runID, stepID: row.stepID, index: row.index, attempt: row.attempts, crashed: silences}, 0, nil
		}
		takeover = true
	default:
		return nil, 0, nil
	}
	c := ent.FromContext(ctx)
	r, err := runRow(ctx, tenantID, row.runID)
	if err != nil {
		return nil, 0, err
	}
	if r.Status == run.StatusSucceeded || r.Status == run.StatusFailed || r.Status == run.StatusCancelled {
		// The run ended after this item was made due: it does not run.
		return nil, 0, setMapItemCancelled(ctx, itemID, now)
	}
	def, err := e.definitionOf(ctx, c, r.VersionID)
	if err != nil {
		return nil, 0, err
	}
	step, ok := def.StepByID(row.stepID)
	if !ok || step.Step == nil {
		return nil, 0, nil
	}
	if err := claimMapItem(ctx, itemID, row.attempts, takeover, now); err != nil {
		return nil, 0, err
	}
	inner := *step.Step
	inner.ID = step.ID
	st := &runState{e: e, c: c, run: r, def: def, steps: map[string]*ent.StepRun{}}
	if err := st.loadVars(ctx); err != nil {
		return nil, 0, err
	}
	if reads := def.Reads(step.ID); len(reads) > 0 {
		list, err := stepRows(ctx, tenantID, r.ID, reads)
		if err != nil {
			return nil, 0, err
		}
		for _, sr := range list {
			st.steps[sr.StepID] = sr
		}
	}
	env := st.expressionEnv()
	env.Item, env.Index = decodeJSON(row.item), int64(row.index)
	j := &job{tenantID: tenantID, runID: r.ID, attemptID: itemID, attempt: row.attempts, step: &inner, env: env, environmentID: r.EnvironmentID, waitForSlots: true,
		idempotencyKey: idempotency.Key(r.ID, step.ID+"/"+strconv.Itoa(row.index)), started: now}
	prepareItemResponseChecks(j, r)
	if inner.Credential != "" {
		typ, secret, err := e.vault.OpenCredential(ctx, c, r.EnvironmentID, inner.Credential)
		switch {
		case errs.CodeOf(err) == errs.NotFound:
			// Left nil: runStep fails the attempt permanently, naming it.
		case err != nil:
			return nil, 0, err
		default:
			j.credential = &steps.Credential{Type: string(typ), Secret: secret}
			if err := e.attachItemConnection(ctx, c, r, j); err != nil {
				return nil, 0, err
			}
		}
	}
	if inner.Type == definition.StepLLM {
		// Like an llm step's claim: fallbacks resolved, budgets checked
		// against what the run had spent when this item was claimed.
		st.e, st.c, st.def, st.now = e, c, def, now
		if err := st.openFallbacks(ctx, &inner, j); err != nil {
			return nil, 0, err
		}
		j.runCost, j.maxRunCost = r.CostMicroUsd, def.MaxCostUSD
		if j.credential != nil {
			if j.budget, j.budgetData, err = st.checkBudget(ctx, &inner, j.credential.Type); err != nil {
				return nil, 0, err
			}
		}
	}
	return &itemJob{id: itemID, runID: r.ID, stepID: step.ID, index: row.index, attempt: row.attempts, job: j}, 0, nil
}

// itemHeartbeat keeps a running item marked alive until stop is called.
func (e *Service) itemHeartbeat(ctx context.Context, it *itemJob) (stop func()) {
	return e.keepAlive(ctx, func(ctx context.Context) error {
		return beatMapItem(ctx, it.id, it.attempt, e.now())
	}, "map item heartbeat", "item_id", it.id)
}

// finishItem records an item's attempt, if it still holds the item, then
// retries it, starts the next waiting item, or finishes the map step.
func (e *Service) finishItem(ctx context.Context, it *itemJob, out any, calls []steps.Call, execErr error) error {
	c := ent.FromContext(ctx)
	// The run first, then the item: the order of every run lock holder.
	s, err := e.lockRunSteps(ctx, c, it.runID, it.stepID)
	if err != nil {
		return err
	}
	row, found, err := lockMapItem(ctx, s.run.TenantID, it.id)
	if err != nil || !found || row.status != "running" || row.attempts != it.attempt {
		return err // fenced: another delivery recorded this attempt
	}
	step, ok := s.def.StepByID(it.stepID)
	if !ok || step.Step == nil {
		return nil
	}
	callMaps := make([]map[string]any, 0, len(calls))
	for _, call := range calls {
		callMaps = append(callMaps, callToMap(call))
	}
	// Model calls are priced and recorded now: the run's cost and the map
	// step's grow item by item (the item's id stands for the attempt).
	cost, err := s.priceCalls(ctx, it.job, callMaps, calls)
	if err != nil {
		return err
	}
	if sr := s.steps[it.stepID]; cost > 0 && sr != nil {
		if err := s.setStep(ctx, sr, changeStep().AddCostMicroUsd(cost)); err != nil {
			return err
		}
	}
	if cost > 0 {
		if _, err := exec(ctx, `UPDATE map_items SET cost_micro_usd = cost_micro_usd + $2 WHERE id = $1`, it.id, cost); err != nil {
			return err
		}
	}
	se := steps.Classify(execErr)
	if se != nil && se.Class == steps.Budget {
		s.emit(eventtype.BudgetExceeded, it.stepID, stepAttempts(s, it.stepID), it.job.budgetData)
	}
	var encoded []byte
	if execErr == nil {
		encoded = encodeJSON(out)
		if se, err = s.checkItemOutputSize(ctx, it, len(encoded)); err != nil {
			return err
		}
	}
	if se == nil {
		if err := recordMapItem(ctx, it.id, "succeeded", encoded, nil, callMaps, nil, s.now); err != nil {
			return err
		}
	} else {
		policy := step.Step.RetryPolicy()
		if se.Class == steps.Transient && it.attempt < policy.MaxAttempts && !s.terminal() {
			delay := max(policy.Backoff(it.attempt, nil), se.RetryAfter)
			at := s.now.Add(delay)
			if err := recordMapItem(ctx, it.id, "queued", nil, se, callMaps, &at, s.now); err != nil {
				return err
			}
			s.tasks = append(s.tasks, mapItemTask(s.run.TenantID, s.run.ID, it.stepID, it.id, strconv.Itoa(it.attempt+1), at))
			return s.flush(ctx)
		}
		if err := recordMapItem(ctx, it.id, "failed", nil, se, callMaps, nil, s.now); err != nil {
			return err
		}
	}
	sr := s.steps[it.stepID]
	if s.terminal() || sr == nil || sr.Status != steprun.StatusRunning {
		return s.flush(ctx) // the map step ended (failed, cancelled): the item keeps its result
	}
	if se != nil && step.MapFailurePolicy() == definition.MapFail {
		if err := cancelMapItems(ctx, s.run.TenantID, s.run.ID, it.stepID, s.now); err != nil {
			return err
		}
		if err := s.finishMap(ctx, step, sr, &steps.Error{Class: se.Class, Message: fmt.Sprintf("map item %d: %s", it.index, se.Message)}); err != nil {
			return err
		}
		return s.flush(ctx)
	}
	inFlight, waiting, err := s.startMapItems(ctx, step)
	if err != nil {
		return err
	}
	if inFlight == 0 && waiting == 0 {
		if err := s.finishMap(ctx, step, sr, nil); err != nil {
			return err
		}
	}
	return s.flush(ctx)
}

// checkItemOutputSize refuses an item output that would take the map's
// output past definition.MaxBytes (the items' outputs are the map step's
// output). Outputs under runOutputCheckFrom skip the query; finishMap
// checks the total again before reading the outputs.
func (s *runState) checkItemOutputSize(ctx context.Context, it *itemJob, n int) (*steps.Error, error) {
	limit := &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("item output would take the map step's output past the %d MiB a step output may store", definition.MaxBytes>>20)}
	if n > definition.MaxBytes {
		return limit, nil
	}
	if n < runOutputCheckFrom {
		return nil, nil
	}
	total, err := mapOutputBytes(ctx, s.run.TenantID, s.run.ID, it.stepID)
	if err != nil {
		return nil, err
	}
	if total+int64(n) > definition.MaxBytes {
		return limit, nil
	}
	return nil, nil
}

// finishMap ends a map step whose items are done (or, with failed set, that
// an item failed under the fail policy): its output is the items' outputs
// in item order and its cost their sum, added to the run's.
// mapOutput reads a map step's items in item order: its output, its cost,
// and (fail policy) the failure of its first failed item, unless failed is
// already set. Outputs past definition.MaxBytes fail it without being read.
func (s *runState) mapOutput(ctx context.Context, step *definition.Step, failed *steps.Error) ([]any, int64, *steps.Error, error) {
	total, err := mapOutputBytes(ctx, s.run.TenantID, s.run.ID, step.ID)
	if err != nil {
		return nil, 0, nil, err
	}
	if total > definition.MaxBytes && failed == nil {
		failed = &steps.Error{Class: steps.Limit, Message: fmt.Sprintf("the items' outputs take %d bytes, more than the %d MiB a step output may store", total, definition.MaxBytes>>20)}
	}
	var items []mapItemResult
	if total <= definition.MaxBytes {
		if items, err = mapItemResults(ctx, s.run.TenantID, s.run.ID, step.ID); err != nil {
			return nil, 0, nil, err
		}
	}
	var cost int64
	out := make([]any, len(items))
	for i, it := range items {
		cost += it.cost
		switch it.status {
		case "succeeded":
			out[i] = decodeJSON(it.output)
		default:
			class, msg := "cancelled", "not run"
			if it.errorClass != nil {
				class = *it.errorClass
			}
			if it.errorMessage != nil {
				msg = *it.errorMessage
			}
			if failed == nil && step.MapFailurePolicy() == definition.MapFail {
				failed = &steps.Error{Class: steps.Class(class), Message: fmt.Sprintf("map item %d: %s", i, msg)}
			}
			out[i] = mapItemError(class, msg)
		}
	}
	return out, cost, failed, nil
}

func (s *runState) finishMap(ctx context.Context, step *definition.Step, sr *ent.StepRun, failed *steps.Error) error {
	out, cost, failed, err := s.mapOutput(ctx, step, failed)
	if err != nil {
		return err
	}
	// The items' costs were added to the step and the run as each finished.
	u := changeStep().SetFinishedAt(s.now)
	attemptID := ""
	if sr.CurrentAttemptID != nil {
		attemptID = *sr.CurrentAttemptID
	}
	var encoded []byte
	if failed == nil {
		encoded = encodeJSON(out)
		if err := s.checkOutputSize(ctx, len(encoded)); err != nil {
			var limit *steps.Error
			if !errors.As(err, &limit) {
				return err
			}
			failed = limit
		}
	}
	if failed == nil {
		if attemptID != "" {
			if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now).SetCostMicroUsd(cost), 1); err != nil {
				return err
			}
		}
		if err := s.setStep(ctx, sr, u.SetStatus(steprun.StatusSucceeded).SetOutput(encoded).ClearReadyAt()); err != nil {
			return err
		}
		s.emit(eventtype.StepSucceeded, step.ID, sr.Attempts, map[string]any{"attemptID": attemptID, "items": len(out)})
		return s.advanceFrom(ctx, step.ID)
	}
	if attemptID != "" {
		if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusFailed).SetFinishedAt(s.now).SetCostMicroUsd(cost).
			SetErrorClass(string(failed.Class)).SetErrorMessage(failed.Message), 1); err != nil {
			return err
		}
	}
	if err := s.setStep(ctx, sr, u.SetStatus(steprun.StatusFailed).SetErrorClass(string(failed.Class)).SetErrorMessage(failed.Message).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, step.ID, sr.Attempts, map[string]any{"class": string(failed.Class), "message": failed.Message, "attemptID": attemptID})
	return s.failRun(ctx, step.ID, string(failed.Class), failed.Message)
}

// stepAttempts is a loaded step's attempt count.
func stepAttempts(s *runState, stepID string) int {
	if sr := s.steps[stepID]; sr != nil {
		return sr.Attempts
	}
	return 0
}

// hasMapItems reports whether the run's definition has a map step whose
// items are rows of their own (so that stopping the run cancels them).
func (s *runState) hasMapItems() bool {
	for i := range s.def.Steps {
		if s.def.Steps[i].MapRunsItems() {
			return true
		}
	}
	return false
}

// cancelRunMapItems, when the run stops (failed by another step, or
// cancelled), cancels the items of its map steps that have not started
// (running ones finish and keep their result) and the map steps still
// running: nothing would finish them now, and a resume starts a cancelled
// map step again, re-running only its items that did not succeed.
func (s *runState) cancelRunMapItems(ctx context.Context) error {
	if !s.hasMapItems() {
		return nil
	}
	if err := cancelMapItems(ctx, s.run.TenantID, s.run.ID, "", s.now); err != nil {
		return err
	}
	var maps []string
	for i := range s.def.Steps {
		if s.def.Steps[i].MapRunsItems() {
			maps = append(maps, s.def.Steps[i].ID)
		}
	}
	if err := s.load(ctx, maps...); err != nil {
		return err
	}
	for _, id := range maps {
		sr := s.steps[id]
		if sr == nil || sr.Status != steprun.StatusRunning {
			continue
		}
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusCancelled).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
			return err
		}
		if sr.CurrentAttemptID != nil {
			if err := s.setAttempt(ctx, *sr.CurrentAttemptID, changeAttempt().SetStatus(stepattempt.StatusCancelled).SetFinishedAt(s.now), -1); err != nil {
				return err
			}
		}
	}
	return nil
}

// dueMapItemsSQL reads a tenant's map items queued and ready before $2, or
// running and silent since before $3 (dueRows).
const dueMapItemsSQL = `SELECT id, run_id, step_id, status, attempts, updated_at FROM map_items
		WHERE tenant_id = $1 AND ready_at IS NOT NULL AND ((status = 'queued' AND ready_at <= $2) OR (status = 'running' AND updated_at <= $3))
		LIMIT 1000`

// dueItemTask is the task that sends a due map item again.
func dueItemTask(tenantID string, it dueItem, now time.Time) tasks.Task {
	variant := strconv.Itoa(it.attempts + 1)
	if it.status == "running" {
		// A takeover: the dead holder's task may still be active.
		variant = strconv.Itoa(it.attempts) + "-" + strconv.FormatInt(it.updatedAt.UnixMilli(), 36)
	}
	return mapItemTask(tenantID, it.runID, it.stepID, it.id, variant, now)
}

// The statements on map_items. Like sql.go's, each names tenant_id
// besides the row's id, and RLS confines it to the transaction's tenant.

type mapItemRow struct {
	runID, stepID   string
	index, attempts int
	takeovers       int
	status          string
	readyAt         *time.Time
	updatedAt       time.Time
	item            json.RawMessage
}

func lockMapItem(ctx context.Context, tenantID, itemID string) (mapItemRow, bool, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return mapItemRow{}, false, err
	}
	var r mapItemRow
	err = q.QueryRow(ctx, `SELECT run_id, step_id, index, status, attempts, takeovers, ready_at, updated_at, item FROM map_items
		WHERE id = $1 AND tenant_id = $2 FOR UPDATE`, itemID, tenantID).
		Scan(&r.runID, &r.stepID, &r.index, &r.status, &r.attempts, &r.takeovers, &r.readyAt, &r.updatedAt, &r.item)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	return r, err == nil, err
}

func runRow(ctx context.Context, tenantID, runID string) (*ent.Run, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	r, err := scanRun(q.QueryRow(ctx, `SELECT `+runColumns+` FROM runs WHERE id = $1 AND tenant_id = $2`, runID, tenantID))
	if err != nil {
		return nil, fmt.Errorf("read run %s: %w", runID, err)
	}
	return r, nil
}

func exec(ctx context.Context, sql string, args ...any) (int64, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, err
	}
	tag, err := q.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func claimMapItem(ctx context.Context, itemID string, attempts int, takeover bool, now time.Time) error {
	_, err := exec(ctx, `UPDATE map_items SET status = 'running', attempts = $2, updated_at = $3, started_at = COALESCE(started_at, $3),
		takeovers = takeovers + CASE WHEN $4 THEN 1 ELSE 0 END
		WHERE id = $1`, itemID, attempts, now, takeover) // tenant: RLS, and the row was read with it
	return err
}

func setMapItemCancelled(ctx context.Context, itemID string, now time.Time) error {
	_, err := exec(ctx, `UPDATE map_items SET status = 'cancelled', ready_at = NULL, updated_at = $2, finished_at = $2 WHERE id = $1`, itemID, now)
	return err
}

func beatMapItem(ctx context.Context, itemID string, attempts int, now time.Time) error {
	_, err := exec(ctx, `UPDATE map_items SET updated_at = $3 WHERE id = $1 AND attempts = $2 AND status = 'running'`, itemID, attempts, now)
	return err
}

// recordMapItem writes an attempt's result: a final status, or queued
// again with the retry's ready_at.
func recordMapItem(ctx context.Context, itemID, status string, output []byte, se *steps.Error, calls []map[string]any, readyAt *time.Time, now time.Time) error {
	var class, msg *string
	if se != nil {
		c, m := string(se.Class), se.Message
		class, msg = &c, &m
	}
	var finished *time.Time
	if readyAt == nil {
		finished = &now
	}
	var out any
	if output != nil {
		out = json.RawMessage(output)
	}
	// Held: sent with the transaction's next statement (store.Hold).
	return store.Hold(ctx, "map_items:"+itemID, 1, `UPDATE map_items SET status = $2, output = $3, error_class = $4, error_message = $5,
		calls = COALESCE(calls, '[]'::jsonb) || $6::jsonb, ready_at = $7, finished_at = $8, updated_at = $9 WHERE id = $1`,
		itemID, status, out, class, msg, encodeJSON(calls), readyAt, finished, now)
}

// insertMapItems writes a map step's items, waiting for a slot.
func insertMapItems(ctx context.Context, tenantID, runID, stepID string, list []any, now time.Time) error {
	n := len(list)
	id, index, item := make([]string, n), make([]int64, n), make([]string, n)
	for i, v := range list {
		id[i], index[i], item[i] = ids.New(ids.MapItem), int64(i), string(encodeJSON(v))
	}
	_, err := exec(ctx, `INSERT INTO map_items (id, tenant_id, created_at, updated_at, run_id, step_id, index, item, status, attempts, cost_micro_usd)
		SELECT t.id, $1, $2, $2, $3, $4, t.index, t.item::jsonb, 'queued', 0, 0
		FROM unnest($5::text[], $6::int8[], $7::text[]) AS t(id, index, item)`,
		tenantID, now, runID, stepID, id, index, item)
	return err
}

// restartMapItems makes a resumed map step's failed and cancelled items
// wait for a slot again; it reports whether the step has items at all.
func restartMapItems(ctx context.Context, tenantID, runID, stepID string, now time.Time) (bool, error) {
	var n int
	if _, err := scalar(ctx, &n, `SELECT count(*) FROM map_items WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3`, tenantID, runID, stepID); err != nil || n == 0 {
		return false, err
	}
	_, err := exec(ctx, `UPDATE map_items SET status = 'queued', ready_at = NULL, error_class = NULL, error_message = NULL, finished_at = NULL, updated_at = $4
		WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 AND status IN ('failed', 'cancelled')`, tenantID, runID, stepID, now)
	return true, err
}

type startedItem struct {
	id       string
	attempts int
}

// settleMapItems makes waiting items due now, in item order, so that up
// to concurrency are in flight (running, or due, or waiting for a retry),
// and returns the counts in flight and waiting after it, with the items it
// started: one round trip.
func settleMapItems(ctx context.Context, tenantID, runID, stepID string, concurrency int, now time.Time) (inFlight, waiting int, started []startedItem, err error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	rows, err := q.Query(ctx, `WITH c AS (
			SELECT count(*) FILTER (WHERE status = 'running' OR (status = 'queued' AND ready_at IS NOT NULL)) AS in_flight,
				count(*) FILTER (WHERE status = 'queued' AND ready_at IS NULL) AS waiting
			FROM map_items WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3),
		s AS (
			UPDATE map_items SET ready_at = $5, updated_at = $5 WHERE id IN (
				SELECT id FROM map_items WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 AND status = 'queued' AND ready_at IS NULL
				ORDER BY index LIMIT GREATEST($4 - (SELECT in_flight FROM c), 0))
			RETURNING id, attempts)
		SELECT c.in_flight, c.waiting, s.id, s.attempts FROM c LEFT JOIN s ON true`, tenantID, runID, stepID, concurrency, now)
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id *string
		var attempts *int
		if err := rows.Scan(&inFlight, &waiting, &id, &attempts); err != nil {
			return 0, 0, nil, err
		}
		if id != nil {
			started = append(started, startedItem{id: *id, attempts: *attempts})
		}
	}
	if err := rows.Err(); err != nil {
		return 0, 0, nil, err
	}
	return inFlight + len(started), waiting - len(started), started, nil
}

// cancelMapItems cancels the items of a run (of one map step, when stepID
// is set) that are not running.
func cancelMapItems(ctx context.Context, tenantID, runID, stepID string, now time.Time) error {
	_, err := exec(ctx, `UPDATE map_items SET status = 'cancelled', ready_at = NULL, finished_at = $4, updated_at = $4
		WHERE tenant_id = $1 AND run_id = $2 AND ($3 = '' OR step_id = $3) AND status = 'queued'`, tenantID, runID, stepID, now)
	return err
}

// mapOutputBytes is the size of a map step's item outputs as JSON text.
func mapOutputBytes(ctx context.Context, tenantID, runID, stepID string) (int64, error) {
	var n int64
	_, err := scalar(ctx, &n, `SELECT COALESCE(sum(octet_length(output::text)), 0)::bigint FROM map_items
		WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 AND output IS NOT NULL`, tenantID, runID, stepID)
	return n, err
}

type mapItemResult struct {
	status                   string
	output                   json.RawMessage
	errorClass, errorMessage *string
	cost                     int64
}

// mapItemResults reads a map step's items in item order.
func mapItemResults(ctx context.Context, tenantID, runID, stepID string) ([]mapItemResult, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT status, output, error_class, error_message, cost_micro_usd FROM map_items
		WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 ORDER BY index`, tenantID, runID, stepID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (mapItemResult, error) {
		var it mapItemResult
		return it, r.Scan(&it.status, &it.output, &it.errorClass, &it.errorMessage, &it.cost)
	})
}
