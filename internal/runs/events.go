package runs

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Outside events: sendEvent stores an event in an environment and resumes
// the wait steps of the environment's runs that wait for it (wait.go).

// MaxEventDataBytes bounds an event's data (and a callback's body) as JSON.
const MaxEventDataBytes = 256 << 10

// EventDedupeWindow is how long an event's id makes the same id a
// duplicate.
const EventDedupeWindow = 24 * time.Hour

// maxEventIDLen bounds the id a sender gives an event.
const maxEventIDLen = 255

// eventName is what an event's name may be: the definition format's rule
// for a wait step's event.
var eventName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,99}$`)

// SendEventInput is what sendEvent takes.
type SendEventInput struct {
	EnvironmentID string
	Name          string
	Data          map[string]any
	// ID, if set, deduplicates: the same id within EventDedupeWindow
	// stores nothing and resumes nothing.
	ID *string
}

// SendEventResult is what sendEvent returns: the event (the original one
// for a duplicate) and how many waiting steps it resumed.
type SendEventResult struct {
	Event     *ent.InboundEvent
	Duplicate bool
	Resumed   int
}

// SendEvent stores an outside event in an environment and resumes every
// wait step of the environment waiting for its name whose match holds
// (up to MaxWaitsPerEvent, oldest waits first; one step per run), each with
// its run locked, in the request's transaction. Roles that may start runs
// may send events.
func (e *Service) SendEvent(ctx context.Context, in SendEventInput) (*SendEventResult, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	var problems []errs.Problem
	if !eventName.MatchString(in.Name) {
		problems = append(problems, errs.Problem{Path: "input.name", Message: "must be 1 to 100 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"})
	}
	if in.ID != nil && (*in.ID == "" || len(*in.ID) > maxEventIDLen) {
		problems = append(problems, errs.Problem{Path: "input.id", Message: "must be 1 to 255 characters"})
	}
	if in.Data == nil {
		in.Data = map[string]any{}
	}
	data, err := json.Marshal(in.Data)
	if err != nil {
		problems = append(problems, errs.Problem{Path: "input.data", Message: "is not JSON: " + err.Error()})
	} else if len(data) > MaxEventDataBytes {
		problems = append(problems, errs.Problem{Path: "input.data", Message: "is more than 256 KiB as JSON"})
	}
	if len(problems) > 0 {
		return nil, errs.InvalidAll("invalid event: "+problems[0].Path+": "+problems[0].Message, problems)
	}
	env, err := control.EnvironmentByID(ctx, c, in.EnvironmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	now := e.now()
	if in.ID != nil {
		// Concurrent sends of one id: the first stores it, the others
		// find it.
		if err := advisoryLock(ctx, v.TenantID+"/event-id/"+*in.ID); err != nil {
			return nil, err
		}
		// Across the tenant (not only what the caller's scope shows), like
		// run idempotency keys.
		prevID, prevEnv, err := eventByDedupeID(ctx, v.TenantID, *in.ID, now.Add(-EventDedupeWindow))
		switch {
		case err != nil:
			return nil, err
		case prevID != "" && prevEnv != env.ID:
			return nil, errs.E(errs.Conflict, "event id %q was used in another environment within %s", *in.ID, EventDedupeWindow)
		case prevID != "":
			prev, err := c.InboundEvent.Get(ctx, prevID)
			if err != nil {
				return nil, err
			}
			return &SendEventResult{Event: prev, Duplicate: true}, nil
		}
	}
	// Waits starting now look at the stored events under the same lock
	// (wait.go): each sees this event or is seen by it.
	if err := lockEventName(ctx, v.TenantID, env.ID, in.Name); err != nil {
		return nil, err
	}
	sender := v.Subject
	if v.APIKeyID != "" {
		sender = v.APIKeyID
	}
	ev, err := c.InboundEvent.Create().SetID(ids.New(ids.InboundEvent)).SetEnvironmentID(env.ID).SetName(in.Name).
		SetNillableDedupeID(in.ID).SetData(data).SetSentBy(sender).SetReceivedAt(now).Save(ctx)
	if err != nil {
		return nil, err
	}
	resumed, err := e.deliverEvent(ctx, c, env.ID, storedEvent{ID: ev.ID, DedupeID: ev.DedupeID, Name: ev.Name, Data: data, ReceivedAt: now})
	if err != nil {
		return nil, err
	}
	meta := map[string]any{"environmentID": env.ID, "name": in.Name, "resumed": resumed}
	if in.ID != nil {
		meta["id"] = *in.ID
	}
	if err := audit.Record(ctx, c, "event.send", "InboundEvent", ev.ID, meta); err != nil {
		return nil, err
	}
	return &SendEventResult{Event: ev, Resumed: resumed}, nil
}

// deliverEvent resolves the waits an event matches; it returns how many.
// Runs are locked in the order of their ids, so that requests sending
// events of different names never wait for each other in a cycle.
func (e *Service) deliverEvent(ctx context.Context, c *ent.Client, environmentID string, ev storedEvent) (int, error) {
	waits, err := pendingWaitsFor(ctx, tenantOf(ctx), environmentID, ev.Name, MaxWaitsPerEvent)
	if err != nil {
		return 0, err
	}
	byRun := map[string][]*waitRow{}
	var runIDs []string
	for _, w := range waits {
		if _, ok := byRun[w.RunID]; !ok {
			runIDs = append(runIDs, w.RunID)
		}
		byRun[w.RunID] = append(byRun[w.RunID], w)
	}
	slices.Sort(runIDs)
	resumed := 0
	for _, runID := range runIDs {
		list := byRun[runID]
		load := make([]string, 0, len(list))
		for _, w := range list {
			load = append(load, w.StepID)
		}
		s, err := e.lockRunSteps(ctx, c, runID, load...)
		if errs.CodeOf(err) == errs.NotFound {
			continue
		}
		if err != nil {
			return 0, err
		}
		s.deferEval = true
		for _, w := range list {
			done, err := s.deliverTo(ctx, w.ID, ev)
			if err != nil {
				return 0, err
			}
			if done {
				resumed++
				break // an event is taken at most once per run
			}
		}
		if err := s.flush(ctx); err != nil {
			return 0, err
		}
	}
	return resumed, nil
}

// deliverTo resolves wait waitID of the locked run with ev if it still
// waits and its match holds.
func (s *runState) deliverTo(ctx context.Context, waitID string, ev storedEvent) (bool, error) {
	if s.terminal() {
		return false, nil
	}
	w, err := waitRowByID(ctx, s.run.TenantID, waitID)
	if err != nil || w == nil || w.Status != waitPending {
		return false, err
	}
	sr := s.steps[w.StepID]
	step, ok := s.def.StepByID(w.StepID)
	if sr == nil || !ok || sr.Status != steprun.StatusWaiting || sr.Attempts != w.Attempt || sr.CurrentAttemptID == nil {
		return false, nil
	}
	if ok, err := s.matches(ctx, step, ev); err != nil || !ok {
		return false, err
	}
	return true, s.resolveWait(ctx, sr, w, waitOutput(ev), &ev.ID, "event")
}

// advisoryLock takes a transaction-level advisory lock on key.
func advisoryLock(ctx context.Context, key string) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)
	return err
}
