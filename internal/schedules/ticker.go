package schedules

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/schedule"
	"github.com/sluicehq/sluice/ent/scheduleaction"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The ticker is responsible for acting on due slots. Everything it knows is
// in Postgres: a schedule's next_slot_at/next_fire_at, its buffered slot,
// and its actions' runs. For each due schedule it locks the row (FOR
// UPDATE SKIP LOCKED), starts the slot's run through the run state machine
// and advances the schedule, in one transaction; the run's idempotency key
// is sched:<id>:<slot>. A worker that dies mid-pass loses its transaction
// and the next pass, in whichever worker, does the slot again; a Redis wipe
// loses nothing (Redis only carries the run's step tasks, which the
// reconciler rebuilds). It runs under store.Singleton ("schedules"); the
// row locks keep it right even without that.

// TickerName is the ticker's singleton (advisory lock) name.
const TickerName = "schedules"

// RunTicker acts on due schedules every Interval until ctx ends.
func (s *Service) RunTicker(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, TickerName, s.log, func() time.Duration { return s.o.Interval }, func(ctx context.Context) error {
		_, err := s.Tick(ctx)
		return err
	})
}

// Tick makes one pass over the due schedules of every tenant that has
// schedules and returns how many slots and buffered slots it acted on.
// Tests call it directly, with their clock.
func (s *Service) Tick(ctx context.Context) (int, error) {
	tenants, err := store.TenantIDsOf(ctx, s.o.Client, store.TenantsScheduling)
	if err != nil {
		return 0, err
	}
	acted := 0
	err = store.EachTenant(ctx, tenants, func(tid string) error {
		n, err := s.tickTenant(ctx, tid)
		acted += n
		return err
	})
	return acted, err
}

func (s *Service) tickTenant(ctx context.Context, tenantID string) (int, error) {
	now := s.now()
	var due []string
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		var err error
		due, err = ent.FromContext(ctx).Schedule.Query().
			Where(schedule.Paused(false), schedule.Or(schedule.NextFireAtLTE(now), schedule.BufferedSlotAtNotNil())).
			Order(ent.Asc(schedule.FieldNextFireAt)).Limit(1000).IDs(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	acted := 0
	var errList []error
	for _, id := range due {
		// One transaction per schedule: one that fails holds no other back.
		vctx := viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: Subject(id), System: true})
		var n int
		if err := store.InTenant(vctx, s.o.Client, func(ctx context.Context) error {
			var err error
			n, err = s.tickSchedule(ctx, id, now)
			return err
		}); err != nil {
			errList = append(errList, fmt.Errorf("schedule %s: %w", id, err))
			continue
		}
		acted += n
	}
	return acted, errors.Join(errList...)
}

// Subject is the createdBy of the runs a schedule starts (and the actor of
// their audit entries).
func Subject(scheduleID string) string { return "schedule:" + scheduleID }

// IdempotencyKey is the key of a slot's run.
func IdempotencyKey(scheduleID string, slot time.Time) string {
	return "sched:" + scheduleID + ":" + slot.UTC().Format(time.RFC3339Nano)
}

// tickSchedule acts on one schedule's due slots at now, in the caller's
// transaction.
func (s *Service) tickSchedule(ctx context.Context, id string, now time.Time) (int, error) {
	c := ent.FromContext(ctx)
	sc, err := c.Schedule.Query().Where(schedule.ID(id), schedule.Paused(false)).
		ForUpdate(entsql.WithLockAction(entsql.SkipLocked)).Only(ctx)
	if ent.IsNotFound(err) {
		return 0, nil // another pass has it, or it was paused or deleted
	}
	if err != nil {
		return 0, err
	}
	spec, err := SpecOf(sc)
	if err != nil {
		return 0, err
	}
	a := &actor{s: s, c: c, sc: sc, now: now}
	if err := a.loadOpen(ctx); err != nil {
		return 0, err
	}
	acted := 0
	// A buffered slot starts once the schedule's runs are finished.
	if sc.BufferedSlotAt != nil && len(a.open) == 0 {
		if err := a.startBuffered(ctx); err != nil {
			return 0, err
		}
		acted++
	}
	jitter := time.Duration(sc.JitterMs) * time.Millisecond
	window := effectiveCatchup(time.Duration(sc.CatchupWindowMs) * time.Millisecond)
	var (
		inWindow           []time.Time
		missed             int
		firstMiss, lastMis time.Time
	)
	next, fire := sc.NextSlotAt, sc.NextFireAt
	for n := 0; next != nil && fire != nil && !fire.After(now) && n < maxSlotsPerPass*10; n++ {
		slot := *next
		if now.Sub(*fire) > window {
			if missed < maxMissedRecorded {
				if err := a.record(ctx, scheduleaction.SourceSlot, scheduleaction.OutcomeMissed, slot, nil,
					fmt.Sprintf("due at %s, more than the catch-up window (%s) ago", fire.Format(time.RFC3339), window)); err != nil {
					return 0, err
				}
			} else {
				if missed == maxMissedRecorded {
					firstMiss = slot
				}
				lastMis = slot
			}
			missed++
		} else {
			inWindow = append(inWindow, slot)
			if len(inWindow) >= maxSlotsPerPass {
				next, fire = advance(spec, sc.ID, slot, jitter)
				break
			}
		}
		next, fire = advance(spec, sc.ID, slot, jitter)
	}
	if missed > maxMissedRecorded {
		if err := a.record(ctx, scheduleaction.SourceSlot, scheduleaction.OutcomeMissed, lastMis, nil,
			fmt.Sprintf("and %d more slots from %s to %s, all due more than the catch-up window (%s) ago", missed-maxMissedRecorded,
				firstMiss.Format(time.RFC3339), lastMis.Format(time.RFC3339), window)); err != nil {
			return 0, err
		}
	}
	// Several slots due at once (after an outage): under SKIP and
	// CANCEL_OTHER only the latest runs, the earlier ones are recorded as
	// skipped; BUFFER_ONE and ALLOW_ALL take them in order.
	if len(inWindow) > 1 && (sc.Overlap == schedule.OverlapSkip || sc.Overlap == schedule.OverlapCancelOther) {
		last := inWindow[len(inWindow)-1]
		for _, slot := range inWindow[:len(inWindow)-1] {
			if err := a.record(ctx, scheduleaction.SourceSlot, scheduleaction.OutcomeSkippedOverlap, slot, nil,
				"caught up late together with later slots: only the latest, "+last.Format(time.RFC3339)+", runs"); err != nil {
				return 0, err
			}
		}
		inWindow = inWindow[len(inWindow)-1:]
	}
	for _, slot := range inWindow {
		if _, err := a.act(ctx, scheduleaction.SourceSlot, slot, IdempotencyKey(sc.ID, slot)); err != nil {
			return 0, err
		}
	}
	acted += len(inWindow) + missed
	if acted == 0 {
		return 0, nil
	}
	u := c.Schedule.UpdateOneID(sc.ID).SetUpdatedAt(now)
	if next == nil {
		u.ClearNextSlotAt().ClearNextFireAt()
	} else {
		u.SetNextSlotAt(*next).SetNextFireAt(*fire)
	}
	if a.buffered != nil {
		u.SetBufferedSlotAt(*a.buffered)
	} else {
		u.ClearBufferedSlotAt()
	}
	return acted, u.Exec(ctx)
}

func advance(spec *Spec, id string, slot time.Time, jitter time.Duration) (*time.Time, *time.Time) {
	n, ok := spec.Next(slot)
	if !ok {
		return nil, nil
	}
	f := n.Add(Jitter(id, n, jitter))
	return &n, &f
}

// actor applies a schedule's overlap policy within one transaction.
type actor struct {
	s        *Service
	c        *ent.Client
	sc       *ent.Schedule
	now      time.Time
	open     []string // the schedule's unfinished runs
	buffered *time.Time
}

// loadOpen reads the schedule's unfinished runs, marking those that
// finished.
func (a *actor) loadOpen(ctx context.Context) error {
	a.buffered = a.sc.BufferedSlotAt
	acts, err := a.c.ScheduleAction.Query().Where(scheduleaction.ScheduleID(a.sc.ID), scheduleaction.RunOpen(true)).All(ctx)
	if err != nil || len(acts) == 0 {
		return err
	}
	runIDs := make([]string, 0, len(acts))
	for _, x := range acts {
		if x.RunID != nil {
			runIDs = append(runIDs, *x.RunID)
		}
	}
	list, err := a.c.Run.Query().Where(run.IDIn(runIDs...)).Select(run.FieldID, run.FieldStatus).All(ctx)
	if err != nil {
		return err
	}
	unfinished := map[string]bool{}
	for _, r := range list {
		switch r.Status {
		case run.StatusQueued, run.StatusRunning, run.StatusWaiting:
			unfinished[r.ID] = true
		}
	}
	var closed []string
	for _, x := range acts {
		if x.RunID != nil && unfinished[*x.RunID] {
			a.open = append(a.open, *x.RunID)
		} else {
			closed = append(closed, x.ID)
		}
	}
	if len(closed) > 0 {
		return a.c.ScheduleAction.Update().Where(scheduleaction.IDIn(closed...)).SetRunOpen(false).Exec(ctx)
	}
	return nil
}

func (a *actor) record(ctx context.Context, source scheduleaction.Source, outcome scheduleaction.Outcome, slot time.Time, runID *string, message string) error {
	_, err := a.create(ctx, source, outcome, slot, runID, message)
	return err
}

func (a *actor) create(ctx context.Context, source scheduleaction.Source, outcome scheduleaction.Outcome, slot time.Time, runID *string, message string) (*ent.ScheduleAction, error) {
	q := a.c.ScheduleAction.Create().SetCreatedAt(a.now).SetScheduleID(a.sc.ID).SetEnvironmentID(a.sc.EnvironmentID).
		SetSource(source).SetOutcome(outcome).SetScheduledAt(slot).SetActedAt(a.now).SetNillableRunID(runID).
		SetRunOpen(runID != nil && outcome == scheduleaction.OutcomeStarted)
	if message != "" {
		q.SetMessage(message)
	}
	return q.Save(ctx)
}

// act applies the overlap policy to one slot (or a trigger) and records
// what it did.
func (a *actor) act(ctx context.Context, source scheduleaction.Source, slot time.Time, key string) (*ent.ScheduleAction, error) {
	if len(a.open) > 0 {
		switch a.sc.Overlap {
		case schedule.OverlapSkip:
			return a.create(ctx, source, scheduleaction.OutcomeSkippedOverlap, slot, nil, "run "+a.open[0]+" of this schedule is unfinished")
		case schedule.OverlapBufferOne:
			if a.buffered != nil || source != scheduleaction.SourceSlot {
				return a.create(ctx, source, scheduleaction.OutcomeSkippedOverlap, slot, nil,
					"run "+a.open[0]+" of this schedule is unfinished and a slot already waits for it")
			}
			t := slot
			a.buffered = &t
			return a.create(ctx, source, scheduleaction.OutcomeBuffered, slot, nil, "waits for run "+a.open[0]+" to finish")
		case schedule.OverlapCancelOther:
			for _, id := range a.open {
				if _, err := a.s.o.Runs.CancelRun(ctx, id); err != nil && errs.CodeOf(err) != errs.Conflict {
					return nil, fmt.Errorf("cancel run %s: %w", id, err)
				}
			}
			a.open = nil
		}
	}
	return a.start(ctx, source, slot, key)
}

// start starts the slot's run and records it; a run the state machine
// refuses (the input no longer fits the deployed version, no version
// deployed, an archived environment) is recorded FAILED with why.
func (a *actor) start(ctx context.Context, source scheduleaction.Source, slot time.Time, key string) (*ent.ScheduleAction, error) {
	input := a.sc.Input
	if input == nil {
		input = map[string]any{}
	}
	r, err := a.s.o.Runs.StartRun(ctx, runsInput(a.sc, input, key))
	if refused(err) {
		return a.create(ctx, source, scheduleaction.OutcomeFailed, slot, nil, err.Error())
	}
	if err != nil {
		return nil, fmt.Errorf("start run: %w", err)
	}
	a.open = append(a.open, r.ID)
	return a.create(ctx, source, scheduleaction.OutcomeStarted, slot, &r.ID, "")
}

// startBuffered starts the buffered slot's run, turning its BUFFERED
// action into STARTED (or FAILED).
func (a *actor) startBuffered(ctx context.Context) error {
	slot := *a.sc.BufferedSlotAt
	a.buffered = nil
	act, err := a.start(ctx, scheduleaction.SourceSlot, slot, IdempotencyKey(a.sc.ID, slot))
	if err != nil {
		return err
	}
	// The new action replaces the BUFFERED one, which said it waited.
	_, err = a.c.ScheduleAction.Delete().Where(scheduleaction.ScheduleID(a.sc.ID), scheduleaction.OutcomeEQ(scheduleaction.OutcomeBuffered),
		scheduleaction.ScheduledAt(slot), scheduleaction.IDNEQ(act.ID)).Exec(ctx)
	return err
}

// refused reports whether the state machine refused a start for what it
// is rather than failing for an outage: such an error comes from a check,
// not a failed statement, so the transaction goes on.
func refused(err error) bool {
	if err == nil {
		return false
	}
	switch errs.CodeOf(err) {
	case errs.Validation, errs.NotFound, errs.Conflict:
		return true
	}
	return false
}

// ScheduleIDOf returns the schedule that a run's createdBy names, or nil.
func ScheduleIDOf(createdBy string) *string {
	id, ok := strings.CutPrefix(createdBy, "schedule:")
	if !ok || id == "" {
		return nil
	}
	return &id
}
