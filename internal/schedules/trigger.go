package schedules

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/scheduleaction"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/viewer"
)

func runsInput(sc *ent.Schedule, input map[string]any, key string) runs.StartRunInput {
	return runs.StartRunInput{WorkflowID: sc.WorkflowID, EnvironmentID: sc.EnvironmentID, Input: input, IdempotencyKey: &key}
}

// asSchedule is ctx acting as the schedule (createdBy of its runs), in the
// same tenant transaction.
func asSchedule(ctx context.Context, tenantID, id string) context.Context {
	return viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: Subject(id), System: true})
}

// Trigger starts a run now, outside the slots, under the schedule's
// overlap policy (SKIP records SKIPPED_OVERLAP while a run is unfinished;
// BUFFER_ONE buffers only slots, so a trigger is skipped then). Its
// idempotency key is sched:<id>:trigger:<now>. Works on a paused schedule.
func (s *Service) Trigger(ctx context.Context, id string) (*ent.ScheduleAction, error) {
	v, c, sc, err := s.lock(ctx, id, viewer.RoleEditor, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	now := s.now()
	a := &actor{s: s, c: c, sc: sc, now: now}
	sctx := asSchedule(ctx, v.TenantID, id)
	if err := a.loadOpen(sctx); err != nil {
		return nil, err
	}
	act, err := a.act(sctx, scheduleaction.SourceTrigger, now, "sched:"+id+":trigger:"+now.Format(time.RFC3339Nano))
	if err != nil {
		return nil, err
	}
	return act, audit.Record(ctx, c, "schedule.trigger", "Schedule", id, map[string]any{"outcome": string(act.Outcome)})
}

// Backfill is the outcome of backfillSchedule.
type Backfill struct {
	Slots   []time.Time
	Actions []*ent.ScheduleAction
	DryRun  bool
}

// Backfill starts one run for each slot of the schedule in [from, to]
// (at most MaxBackfillSlots), whatever the overlap policy, with the slot's
// own idempotency key: a slot that already started a run starts no other.
// A dry run lists the slots and writes nothing.
func (s *Service) Backfill(ctx context.Context, id string, from, to time.Time, dryRun bool) (*Backfill, error) {
	v, c, sc, err := s.lock(ctx, id, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	now := s.now()
	switch {
	case !to.After(from):
		return nil, errs.Invalid("to", "must be after from")
	case to.After(now):
		return nil, errs.Invalid("to", "must not be in the future: the ticker runs the slots to come")
	}
	spec, err := SpecOf(sc)
	if err != nil {
		return nil, err
	}
	var slots []time.Time
	after := from.Add(-time.Nanosecond)
	for {
		t, ok := spec.Next(after)
		if !ok || t.After(to) {
			break
		}
		if len(slots) == MaxBackfillSlots {
			return nil, errs.Invalid("to", "the range holds more than %d slots; backfill a shorter one", MaxBackfillSlots)
		}
		slots = append(slots, t)
		after = t
	}
	out := &Backfill{Slots: slots, DryRun: dryRun, Actions: []*ent.ScheduleAction{}}
	if dryRun {
		return out, nil
	}
	a := &actor{s: s, c: c, sc: sc, now: now}
	sctx := asSchedule(ctx, v.TenantID, id)
	if err := a.loadOpen(sctx); err != nil {
		return nil, err
	}
	for _, slot := range slots {
		act, err := a.start(sctx, scheduleaction.SourceBackfill, slot, IdempotencyKey(id, slot))
		if err != nil {
			return nil, err
		}
		out.Actions = append(out.Actions, act)
	}
	return out, audit.Record(ctx, c, "schedule.backfill", "Schedule", id, map[string]any{
		"from": from.UTC().Format(time.RFC3339Nano), "to": to.UTC().Format(time.RFC3339Nano), "slots": len(slots)})
}
