package graph

import (
	"context"
	"sync"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/webhook"
)

// loader loads child lists one query per level instead of one per parent.
// RequestLimits registers every run, step and webhook delivery a resolver
// returns; when the first child list of a level is asked for (the steps of
// one run), it is loaded for every registered parent still without one (the
// steps of all the runs of the page) in a single statement, and the siblings
// then read it from here. Nothing waits on a timer: gqlgen resolves a list's
// parents before their children, so the siblings are registered by then.
type loader struct {
	mu sync.Mutex

	runs      map[string]*ent.Run
	steps     [2]map[string][]*ent.StepRun // by run id, once loaded: [0] without outputs, [1] with
	stepRuns  map[string]*ent.StepRun
	attempts  map[string][]*ent.StepAttempt // by step run id
	events    map[eventsPage]map[string][]*ent.RunEvent
	eventsFor map[eventsPage]map[string]bool
	hooks     map[string]*ent.WebhookDelivery
	hookTries map[string][]*ent.WebhookAttempt // by delivery id
}

type eventsPage struct{ after, n int }

// maxBatch bounds the parents of one statement, so a page of runs with many
// steps each is read in a few bounded pieces.
const maxBatch = 50

func newLoader() *loader {
	return &loader{
		runs: map[string]*ent.Run{}, steps: [2]map[string][]*ent.StepRun{{}, {}},
		stepRuns: map[string]*ent.StepRun{}, attempts: map[string][]*ent.StepAttempt{},
		events: map[eventsPage]map[string][]*ent.RunEvent{}, eventsFor: map[eventsPage]map[string]bool{},
		hooks: map[string]*ent.WebhookDelivery{}, hookTries: map[string][]*ent.WebhookAttempt{},
	}
}

// register remembers the parents in a resolved value.
func (l *loader) register(v any) {
	switch x := v.(type) {
	case *ent.Run:
		l.addRuns(x)
	case []*ent.Run:
		l.addRuns(x...)
	case *ent.RunConnection:
		if x != nil {
			for _, e := range x.Edges {
				if e != nil {
					l.addRuns(e.Node)
				}
			}
		}
	case []ent.Noder:
		for _, n := range x {
			l.register(n)
		}
	case *ent.WebhookDelivery:
		l.addDeliveries(x)
	case []*ent.WebhookDelivery:
		l.addDeliveries(x...)
	case *ent.WebhookDeliveryConnection:
		if x != nil {
			for _, e := range x.Edges {
				if e != nil {
					l.addDeliveries(e.Node)
				}
			}
		}
	}
}

func (l *loader) addRuns(runs ...*ent.Run) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range runs {
		if r != nil {
			l.runs[r.ID] = r
		}
	}
}

func (l *loader) addDeliveries(ds ...*ent.WebhookDelivery) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range ds {
		if d != nil {
			l.hooks[d.ID] = d
		}
	}
}

// pending returns id first, then up to maxBatch-1 other registered ids
// without a loaded value.
func pending[T any](id string, registered map[string]T, loaded func(string) bool) []string {
	ids := []string{id}
	for other := range registered {
		if len(ids) >= maxBatch {
			break
		}
		if other != id && !loaded(other) {
			ids = append(ids, other)
		}
	}
	return ids
}

// Steps returns a run's steps in definition order, with their outputs only
// when withOutput is set.
func (l *loader) Steps(ctx context.Context, c *ent.Client, r *ent.Run, withOutput bool) ([]*ent.StepRun, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	mode := 0
	if withOutput {
		mode = 1
	}
	cache := l.steps[mode]
	if s, ok := cache[r.ID]; ok {
		return s, nil
	}
	l.runs[r.ID] = r
	ids := pending(r.ID, l.runs, func(id string) bool { _, ok := cache[id]; return ok })
	parents := make([]*ent.Run, len(ids))
	for i, id := range ids {
		parents[i] = l.runs[id]
	}
	got, err := runs.StepsOfRuns(ctx, c, parents, withOutput)
	if err != nil {
		return nil, err
	}
	for id, list := range got {
		cache[id] = list
		for _, s := range list {
			l.stepRuns[s.ID] = s
		}
	}
	return cache[r.ID], nil
}

// Attempts returns a step run's attempts, oldest first.
func (l *loader) Attempts(ctx context.Context, c *ent.Client, s *ent.StepRun) ([]*ent.StepAttempt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.attempts[s.ID]; ok {
		return a, nil
	}
	l.stepRuns[s.ID] = s
	ids := pending(s.ID, l.stepRuns, func(id string) bool { _, ok := l.attempts[id]; return ok })
	got, err := runs.AttemptsOfSteps(ctx, c, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		l.attempts[id] = got[id]
	}
	return l.attempts[s.ID], nil
}

// Events returns at most n of a run's events after afterSeq.
func (l *loader) Events(ctx context.Context, c *ent.Client, runID string, afterSeq, n int) ([]*ent.RunEvent, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	page := eventsPage{afterSeq, n}
	if l.eventsFor[page][runID] {
		return l.events[page][runID], nil
	}
	if l.eventsFor[page] == nil {
		l.eventsFor[page], l.events[page] = map[string]bool{}, map[string][]*ent.RunEvent{}
	}
	ids := pending(runID, l.runs, func(id string) bool { return l.eventsFor[page][id] })
	got, err := runs.EventsOfRuns(ctx, c, ids, afterSeq, n)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		l.eventsFor[page][id] = true
		l.events[page][id] = got[id]
	}
	return l.events[page][runID], nil
}

// DeliveryAttempts returns a webhook delivery's attempts, oldest first.
func (l *loader) DeliveryAttempts(ctx context.Context, c *ent.Client, d *ent.WebhookDelivery) ([]*ent.WebhookAttempt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a, ok := l.hookTries[d.ID]; ok {
		return a, nil
	}
	l.hooks[d.ID] = d
	ids := pending(d.ID, l.hooks, func(id string) bool { _, ok := l.hookTries[id]; return ok })
	got, err := webhook.AttemptsOfDeliveries(ctx, c, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		l.hookTries[id] = got[id]
	}
	return l.hookTries[d.ID], nil
}
