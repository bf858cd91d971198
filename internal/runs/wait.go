package runs

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
)

// Wait steps wait for an outside event: one sent to the run's environment
// with sendEvent (events.go) whose name is the step's `event` and for which
// its `match` holds, or a POST to the step's callback URL (callback.go).
//
// A wait step is started by a worker, like a step with an `if` (decide.go):
// the worker first looks at the events of its name already stored since the
// run was created that no step of the run took (beginWait), oldest first,
// and takes the first that matches. Otherwise the step waits: its attempt
// is due at the wait's deadline (ready_at), so the reconciler finds the
// timeout like a delay's end, whatever happened to the queue. An event
// that arrives while it waits resolves it in the sendEvent transaction,
// with the run's lock; the deadline then finds nothing to do.
//
// An event arriving while a wait starts must not be missed by both: the
// request sending it and the worker starting the wait both take a lock on
// the environment and event name (lockEventName), the request waiting for
// it, the worker (which holds the run's lock, which the request may want
// next) only trying. A worker that finds it taken commits the wait
// unscanned and looks at the stored events again a moment later
// (rescanAfter), when the request has committed; later requests see the
// committed wait.

// MaxWaitsPerEvent is how many waiting steps one event resumes at most:
// the oldest waits first.
const MaxWaitsPerEvent = 1000

// maxScannedEvents is how many stored events a starting wait considers,
// oldest first.
const maxScannedEvents = 1000

// rescanAfter is how soon a wait that could not look at the stored events
// (an event of its name was being sent) looks again.
const rescanAfter = time.Second

// eventValue is an event as a match sees it, and as a wait step outputs it
// (with its name under "event"): id is the id its sender gave, or Sluice's
// when it gave none.
func eventValue(ev storedEvent) map[string]any {
	id := ev.ID
	if ev.DedupeID != nil {
		id = *ev.DedupeID
	}
	return map[string]any{"name": ev.Name, "id": id, "data": decodeJSON(ev.Data), "receivedAt": ev.ReceivedAt.UTC().Format(time.RFC3339Nano)}
}

// waitOutput is a wait step's output for an event.
func waitOutput(ev storedEvent) json.RawMessage {
	v := eventValue(ev)
	return encodeJSON(map[string]any{"event": v["name"], "id": v["id"], "data": v["data"], "receivedAt": v["receivedAt"]})
}

// beginWait starts a wait step, on the worker that claimed its decision
// attempt (the run locked): it takes a stored event that matches, or waits.
func (s *runState) beginWait(ctx context.Context, sr *ent.StepRun, step *definition.Step) error {
	if s.run.Mode == run.ModeSandbox {
		return s.replayWait(ctx, sr, step)
	}
	s.markStarted()
	decision := *sr.CurrentAttemptID
	w := &waitRow{ID: ids.New(ids.EventWait), TenantID: s.run.TenantID, RunID: s.run.ID, StepID: step.ID, StepRunID: sr.ID,
		EnvironmentID: s.run.EnvironmentID, Event: step.Event, Match: step.Match, Status: waitPending, ExpiresAt: s.now.Add(step.WaitTimeout())}
	locked, err := tryLockEventName(ctx, s.run.TenantID, s.run.EnvironmentID, step.Event)
	if err != nil {
		return fmt.Errorf("lock event name: %w", err)
	}
	if locked {
		ev, err := s.findEvent(ctx, step)
		if err != nil {
			return err
		}
		w.Scanned = true
		if ev != nil {
			// Taken at once: the decision attempt is the one that took it.
			w.Status, w.EventID, w.Payload, w.Attempt = waitResolved, &ev.ID, waitOutput(*ev), sr.Attempts
			by := "event"
			if err := insertWait(ctx, w, unusableTokenHash(), &by, s.now); err != nil {
				return err
			}
			if err := s.setStep(ctx, sr, changeStep().SetStartedAt(s.now)); err != nil {
				return err
			}
			return s.finishWait(ctx, s.steps[sr.StepID], w, decision, by)
		}
	}
	readyAt := w.ExpiresAt
	if !w.Scanned {
		readyAt = s.now.Add(rescanAfter)
	}
	if err := s.scheduleAttemptAs(ctx, sr, readyAt, steprun.StatusWaiting); err != nil {
		return err
	}
	sr = s.steps[sr.StepID]
	if err := s.setStep(ctx, sr, changeStep().SetStartedAt(s.now)); err != nil {
		return err
	}
	w.Attempt = sr.Attempts
	token, err := s.e.callbackToken(ctx, s.c, s.run.TenantID, w.ID)
	if err != nil {
		return err
	}
	if err := insertWait(ctx, w, hashToken(token), nil, s.now); err != nil {
		return err
	}
	if err := s.setAttempt(ctx, decision, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now), 1); err != nil {
		return err
	}
	// The callback URL is not stored: GraphQL adds it to the event's data
	// for callers who may send events (CallbackPath).
	s.emit(eventtype.StepWaiting, sr.StepID, sr.Attempts, map[string]any{
		"waitID": w.ID, "event": step.Event, "expiresAt": w.ExpiresAt.Format(time.RFC3339Nano)})
	return nil
}

// findEvent returns the oldest stored event the step may take: of its
// environment and name, received since the run was created, taken by no
// step of the run, and matching its match; nil when there is none. A match
// that fails to evaluate (a field the event lacks, say) does not match.
func (s *runState) findEvent(ctx context.Context, step *definition.Step) (*storedEvent, error) {
	evs, err := untakenEvents(ctx, s.run.TenantID, s.run.EnvironmentID, step.Event, s.run.ID, s.run.CreatedAt, maxScannedEvents)
	if err != nil {
		return nil, fmt.Errorf("stored events: %w", err)
	}
	if len(evs) == 0 {
		return nil, nil
	}
	if step.Match == "" {
		return &evs[0], nil
	}
	if err := s.load(ctx, s.def.Reads(step.ID)...); err != nil {
		return nil, err
	}
	env := s.expressionEnv()
	for i := range evs {
		ok, err := definition.EvalMatch(step.Match, env, eventValue(evs[i]))
		if err != nil {
			s.e.log.DebugContext(ctx, "match did not evaluate", "run_id", s.run.ID, "step_id", step.ID, "event_id", evs[i].ID, "err", err)
			continue
		}
		if ok {
			return &evs[i], nil
		}
	}
	return nil, nil
}

// matches evaluates a waiting step's match against an event.
func (s *runState) matches(ctx context.Context, step *definition.Step, ev storedEvent) (bool, error) {
	if step.Match == "" {
		return true, nil
	}
	if err := s.load(ctx, s.def.Reads(step.ID)...); err != nil {
		return false, err
	}
	ok, err := definition.EvalMatch(step.Match, s.expressionEnv(), eventValue(ev))
	if err != nil {
		s.e.log.DebugContext(ctx, "match did not evaluate", "run_id", s.run.ID, "step_id", step.ID, "event_id", ev.ID, "err", err)
		return false, nil
	}
	return ok, nil
}

// wakeWait handles the due attempt of a waiting wait step (claimStep): it
// looks at the stored events if it could not when it began, and applies
// the timeout once the deadline has passed.
func (s *runState) wakeWait(ctx context.Context, step *definition.Step, sr *ent.StepRun) error {
	w, err := latestWaitOfStep(ctx, s.run.TenantID, sr.ID)
	if err != nil {
		return fmt.Errorf("wait of step %s: %w", step.ID, err)
	}
	if w == nil || w.Status != waitPending || w.Attempt != sr.Attempts {
		return nil
	}
	if !w.Scanned {
		locked, err := tryLockEventName(ctx, s.run.TenantID, s.run.EnvironmentID, step.Event)
		if err != nil {
			return fmt.Errorf("lock event name: %w", err)
		}
		switch {
		case locked:
			ev, err := s.findEvent(ctx, step)
			if err != nil {
				return err
			}
			if ev != nil {
				return s.resolveWait(ctx, sr, w, waitOutput(*ev), &ev.ID, "event")
			}
			if err := markWaitScanned(ctx, w, s.now); err != nil {
				return err
			}
		case s.now.Before(w.ExpiresAt):
			at := s.now.Add(rescanAfter)
			if at.After(w.ExpiresAt) {
				at = w.ExpiresAt
			}
			return s.wakeWaitAt(ctx, sr, at)
		}
	}
	if !s.now.Before(w.ExpiresAt) {
		return s.timeoutWait(ctx, sr, step, w)
	}
	return s.wakeWaitAt(ctx, sr, w.ExpiresAt)
}

// wakeWaitAt makes a waiting wait step's attempt due at `at`, with a
// wake-up of its own (the attempt's own task id may still be in use).
func (s *runState) wakeWaitAt(ctx context.Context, sr *ent.StepRun, at time.Time) error {
	if err := s.setStep(ctx, sr, changeStep().SetReadyAt(at)); err != nil {
		return err
	}
	t := stepTask(s.run.TenantID, s.run.ID, sr.StepID, sr.Type, *sr.CurrentAttemptID, at)
	t.VersionID = s.run.VersionID
	t.Variant = "w" + strconv.FormatInt(at.UnixMilli(), 36)
	s.tasks = append(s.tasks, t)
	return nil
}

// timeoutWait applies a wait's onTimeout once its deadline has passed:
// fail the step (class timeout) or succeed it with {"timedOut": true}.
func (s *runState) timeoutWait(ctx context.Context, sr *ent.StepRun, step *definition.Step, w *waitRow) error {
	if err := resolveWaitRow(ctx, w, waitExpired, "timeout", nil, nil, s.now); err != nil {
		return err
	}
	attemptID := *sr.CurrentAttemptID
	if step.TimeoutAction() == definition.OnTimeoutContinue {
		if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now), 1); err != nil {
			return err
		}
		out := encodeJSON(map[string]any{"timedOut": true})
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(out).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
			return err
		}
		s.emit(eventtype.StepSucceeded, sr.StepID, sr.Attempts, map[string]any{"attemptID": attemptID, "timedOut": true})
		return s.advanceFrom(ctx, sr.StepID)
	}
	msg := fmt.Sprintf("no %q event came within %s", step.Event, step.WaitTimeout())
	class := string(steps.Timeout)
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, sr.Attempts, map[string]any{"class": class, "message": msg, "attemptID": attemptID})
	return s.failRun(ctx, sr.StepID, class, msg)
}

// resolveWait completes a waiting wait step with the output of the event
// or callback that arrived, and moves the run on like an approval
// decision: from an API request (deferEval), a step that is its run's last
// open one is queued for a worker to finish (decide), since finishing the
// run evaluates its output.
func (s *runState) resolveWait(ctx context.Context, sr *ent.StepRun, w *waitRow, output json.RawMessage, eventID *string, by string) error {
	if err := resolveWaitRow(ctx, w, waitResolved, by, eventID, output, s.now); err != nil {
		return err
	}
	attemptID := *sr.CurrentAttemptID
	if s.deferEval {
		last, err := s.lastOpenStep(ctx)
		if err != nil {
			return err
		}
		if last {
			if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now), 1); err != nil {
				return err
			}
			if err := s.scheduleAttemptAs(ctx, sr, s.now, steprun.StatusQueued); err != nil {
				return err
			}
			return s.settle(ctx)
		}
	}
	return s.finishWait(ctx, sr, w, attemptID, by)
}

// finishWait succeeds a wait step with its resolved wait's payload; the
// attempt is the step's current one.
func (s *runState) finishWait(ctx context.Context, sr *ent.StepRun, w *waitRow, attemptID, by string) error {
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusSucceeded).SetFinishedAt(s.now), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(w.Payload).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	data := map[string]any{"attemptID": attemptID, "waitID": w.ID, "resolvedBy": by}
	if w.EventID != nil {
		data["eventID"] = *w.EventID
	}
	s.emit(eventtype.StepSucceeded, sr.StepID, sr.Attempts, data)
	return s.advanceFrom(ctx, sr.StepID)
}

// replayWait finishes a wait step of a sandbox replay with the source run's
// recorded output: a rehearsal waits for nothing.
func (s *runState) replayWait(ctx context.Context, sr *ent.StepRun, step *definition.Step) error {
	var out json.RawMessage
	found := false
	if s.run.ReplayOf != nil {
		var err error
		if out, found, err = succeededOutput(ctx, s.run.TenantID, *s.run.ReplayOf, step.ID); err != nil {
			return err
		}
	}
	if !found {
		return s.failStepNow(ctx, sr, steps.Permanent, "sandbox replay: the source run has no recorded output for step "+step.ID)
	}
	s.markStarted()
	if err := s.endDecision(ctx, sr, stepattempt.StatusSucceeded); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusSucceeded).SetOutput(out).SetStartedAt(s.now).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepSucceeded, sr.StepID, sr.Attempts, map[string]any{"attemptID": *sr.CurrentAttemptID, "replayed": true})
	return s.advanceFrom(ctx, sr.StepID)
}

// Callback tokens. A wait's token is an HMAC of the wait's id under a key
// derived from its tenant's data key (vault.CallbackKey), prefixed with the
// tenant's id so that its lookup runs under the tenant's row-level
// security: `<tenant id>.<43 characters>`. Only its SHA-256 is stored; it
// is computed again to be shown.

// callbackToken is the callback token of wait waitID of tenantID.
func (e *Service) callbackToken(ctx context.Context, c *ent.Client, tenantID, waitID string) (string, error) {
	key, err := e.callbackKey(ctx, c, tenantID)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("wait:" + waitID))
	return tenantID + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}

// callbackKey returns the tenant's callback key; data keys never change
// (a master key rotation rewraps them), so it is kept once derived.
func (e *Service) callbackKey(ctx context.Context, c *ent.Client, tenantID string) ([]byte, error) {
	if k, ok := e.callbackKeys.Load(tenantID); ok {
		return k.([]byte), nil
	}
	if e.vault == nil {
		return nil, fmt.Errorf("callback tokens need the vault")
	}
	k, err := e.vault.CallbackKey(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("callback key: %w", err)
	}
	e.callbackKeys.Store(tenantID, k)
	return k, nil
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// unusableTokenHash is the token hash of a wait resolved as it began: a
// hash of random bytes, which no token has.
func unusableTokenHash() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return "x" + hex.EncodeToString(b)
}
