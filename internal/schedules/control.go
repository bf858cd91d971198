package schedules

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/schedule"
	"github.com/sluicehq/sluice/ent/scheduleaction"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Input is what createSchedule and updateSchedule take; in an update a nil
// field keeps its value (workflow and environment cannot change).
type Input struct {
	WorkflowID, EnvironmentID string
	Cron, Every, Offset       *string
	Timezone                  *string
	Input                     map[string]any
	Overlap                   *schedule.Overlap
	CatchupWindow, Jitter     *string
	StartAt, EndAt            *time.Time
	Paused                    *bool
	Note                      *string
}

// settings is a schedule's configuration, validated.
type settings struct {
	cron, every, offset *string
	timezone            string
	input               map[string]any
	overlap             schedule.Overlap
	catchup, jitter     time.Duration
	start, end          *time.Time
	paused              bool
	note                *string
	spec                *Spec
}

func fromSchedule(sc *ent.Schedule) settings {
	return settings{cron: sc.Cron, every: sc.Every, offset: sc.Offset, timezone: sc.Timezone, input: sc.Input, overlap: sc.Overlap,
		catchup: time.Duration(sc.CatchupWindowMs) * time.Millisecond, jitter: time.Duration(sc.JitterMs) * time.Millisecond,
		start: sc.StartAt, end: sc.EndAt, paused: sc.Paused, note: sc.Note}
}

// SpecOf returns a stored schedule's spec.
func SpecOf(sc *ent.Schedule) (*Spec, error) {
	st := fromSchedule(sc)
	if p := st.check(); len(p) > 0 {
		return nil, fmt.Errorf("schedule %s: %s", sc.ID, p[0].Path+": "+p[0].Message)
	}
	return st.spec, nil
}

// merge applies an input over st.
func (st *settings) merge(in Input) []errs.Problem {
	var problems []errs.Problem
	if in.Cron != nil && in.Every != nil {
		problems = append(problems, errs.Problem{Path: "input.every", Message: "give cron or every, not both"})
	}
	if in.Cron != nil {
		st.cron, st.every, st.offset = in.Cron, nil, nil
	}
	if in.Every != nil {
		st.every, st.cron = in.Every, nil
	}
	if in.Offset != nil {
		st.offset = in.Offset
	}
	if in.Timezone != nil {
		st.timezone = *in.Timezone
	}
	if in.Input != nil {
		st.input = in.Input
	}
	if in.Overlap != nil {
		st.overlap = *in.Overlap
	}
	durations := []struct {
		path string
		v    *string
		dst  *time.Duration
	}{{"input.catchupWindow", in.CatchupWindow, &st.catchup}, {"input.jitter", in.Jitter, &st.jitter}}
	for _, d := range durations {
		if d.v == nil {
			continue
		}
		v, err := time.ParseDuration(*d.v)
		switch {
		case err != nil:
			problems = append(problems, errs.Problem{Path: d.path, Message: "not a duration (such as 90s, 1h): " + *d.v})
		case v < 0:
			problems = append(problems, errs.Problem{Path: d.path, Message: "must not be negative"})
		default:
			*d.dst = v
		}
	}
	if in.StartAt != nil {
		t := in.StartAt.UTC()
		st.start = &t
	}
	if in.EndAt != nil {
		t := in.EndAt.UTC()
		st.end = &t
	}
	if in.Paused != nil {
		st.paused = *in.Paused
	}
	if in.Note != nil {
		st.note = in.Note
	}
	return problems
}

// check validates st and builds its spec.
func (st *settings) check() []errs.Problem {
	var problems []errs.Problem
	bad := func(path, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if st.timezone == "" {
		st.timezone = "UTC"
	}
	loc, err := time.LoadLocation(st.timezone)
	if err != nil || st.timezone == "Local" {
		bad("input.timezone", "unknown time zone %q (an IANA name such as Europe/Berlin)", st.timezone)
		loc = time.UTC
	}
	if st.start != nil && st.end != nil && !st.end.After(*st.start) {
		bad("input.endAt", "must be after startAt")
	}
	if st.jitter > 24*time.Hour {
		bad("input.jitter", "must be at most 24h")
	}
	if st.note != nil && len(*st.note) > maxNote {
		bad("input.note", "at most %d characters", maxNote)
	}
	switch {
	case st.cron != nil && st.every != nil, st.cron == nil && st.every == nil:
		bad("input.cron", "give cron or every (one of them)")
	case st.cron != nil:
		if st.offset != nil {
			bad("input.offset", "goes with every, not cron")
		}
		spec, err := NewCronSpec(*st.cron, loc, st.start, st.end)
		if err != nil {
			bad("input.cron", "invalid cron expression: %v", err)
		} else {
			st.spec = spec
		}
	default:
		every, err := time.ParseDuration(*st.every)
		if err != nil {
			bad("input.every", "not a duration (such as 30s, 1h): %s", *st.every)
			break
		}
		var offset time.Duration
		if st.offset != nil {
			if offset, err = time.ParseDuration(*st.offset); err != nil {
				bad("input.offset", "not a duration: %s", *st.offset)
				break
			}
		}
		spec, err := NewEverySpec(every, offset, st.start, st.end)
		if err != nil {
			path := "input.every"
			if every >= MinEvery {
				path = "input.offset"
			}
			bad(path, "%v", err)
		} else {
			st.spec = spec
		}
	}
	if len(problems) > 0 {
		st.spec = nil
	}
	return problems
}

// effectiveCatchup is the catch-up window the ticker applies.
func effectiveCatchup(d time.Duration) time.Duration { return max(d, MinCatchupWindow) }

// Create validates the input and creates the schedule, positioned at its
// first slot after now. Editors only; bad input is VALIDATION naming the
// field, with nothing written.
func (s *Service) Create(ctx context.Context, in Input) (*ent.Schedule, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if _, err := c.Workflow.Get(ctx, in.WorkflowID); ent.IsNotFound(err) {
		return nil, errs.Invalid("input.workflowID", "no such workflow")
	} else if err != nil {
		return nil, err
	}
	env, err := control.EnvironmentByID(ctx, c, in.EnvironmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	if env.ArchivedAt != nil {
		return nil, control.ArchivedError(env, "input.environmentID", "new schedules")
	}
	st := settings{overlap: schedule.OverlapSkip, catchup: DefaultCatchupWindow, timezone: "UTC"}
	problems := st.merge(in)
	problems = append(problems, st.check()...)
	if len(problems) > 0 {
		return nil, invalid(problems)
	}
	if err := s.checkInput(ctx, c, in.WorkflowID, env.ID, st.input); err != nil {
		return nil, err
	}
	now := s.now()
	id := ids.New(ids.Schedule)
	q := c.Schedule.Create().SetID(id).SetCreatedAt(now).SetUpdatedAt(now).SetWorkflowID(in.WorkflowID).SetEnvironmentID(env.ID).
		SetCreatedBy(v.Subject)
	st.apply(q.Mutation())
	position(q.Mutation(), id, st, now)
	sc, err := q.Save(ctx)
	if err != nil {
		return nil, err
	}
	// The ticker visits tenants with schedules only (bookkeeping only
	// Sluice writes, like open_evaluations).
	if err := c.Tenant.Update().Where(tenant.ID(v.TenantID)).AddSchedules(1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count schedule: %w", err)
	}
	return sc, audit.Record(ctx, c, "schedule.create", "Schedule", sc.ID, auditMeta(sc))
}

// Update changes a schedule. A change of when it fires (cron, every,
// offset, timezone, startAt, endAt, jitter) positions it again at its first
// slot after now.
func (s *Service) Update(ctx context.Context, id string, in Input) (*ent.Schedule, error) {
	_, c, sc, err := s.lock(ctx, id, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	st := fromSchedule(sc)
	problems := st.merge(in)
	problems = append(problems, st.check()...)
	if len(problems) > 0 {
		return nil, invalid(problems)
	}
	if in.Input != nil {
		if err := s.checkInput(ctx, c, sc.WorkflowID, sc.EnvironmentID, st.input); err != nil {
			return nil, err
		}
	}
	now := s.now()
	u := c.Schedule.UpdateOneID(id).SetUpdatedAt(now)
	st.apply(u.Mutation())
	if in.Cron != nil || in.Every != nil || in.Offset != nil || in.Timezone != nil || in.StartAt != nil || in.EndAt != nil || in.Jitter != nil ||
		(in.Paused != nil && !*in.Paused && sc.Paused) {
		position(u.Mutation(), id, st, now)
	}
	sc, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	return sc, audit.Record(ctx, c, "schedule.update", "Schedule", id, auditMeta(sc))
}

// Delete removes a schedule and its recorded actions; runs it started stay.
func (s *Service) Delete(ctx context.Context, id string) (*ent.Schedule, error) {
	v, c, sc, err := s.lock(ctx, id, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if _, err := c.ScheduleAction.Delete().Where(scheduleaction.ScheduleID(id)).Exec(ctx); err != nil {
		return nil, err
	}
	if err := c.Schedule.DeleteOneID(id).Exec(ctx); err != nil {
		return nil, err
	}
	if err := c.Tenant.Update().Where(tenant.ID(v.TenantID)).AddSchedules(-1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count schedule: %w", err)
	}
	return sc, audit.Record(ctx, c, "schedule.delete", "Schedule", id, nil)
}

// Pause stops a schedule taking actions; note says why.
func (s *Service) Pause(ctx context.Context, id string, note *string) (*ent.Schedule, error) {
	t := true
	return s.Update(ctx, id, Input{Paused: &t, Note: note})
}

// Resume lets a paused schedule act again from its first slot after now:
// the slots that passed while it was paused are not caught up.
func (s *Service) Resume(ctx context.Context, id string) (*ent.Schedule, error) {
	f := false
	return s.Update(ctx, id, Input{Paused: &f})
}

// Get returns a schedule the viewer may see.
func (s *Service) Get(ctx context.Context, id string) (*ent.Schedule, error) {
	c, err := clientOf(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := c.Schedule.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("schedule", id)
	}
	return sc, err
}

// Query lists the viewer's schedules, of one workflow when given.
func (s *Service) Query(ctx context.Context, workflowID *string) (*ent.ScheduleQuery, error) {
	c, err := clientOf(ctx)
	if err != nil {
		return nil, err
	}
	q := c.Schedule.Query()
	if workflowID != nil {
		q.Where(schedule.WorkflowID(*workflowID))
	}
	return q, nil
}

// RecentActions returns a schedule's last n actions, newest first.
func (s *Service) RecentActions(ctx context.Context, id string, n int) ([]*ent.ScheduleAction, error) {
	c, err := clientOf(ctx)
	if err != nil {
		return nil, err
	}
	if n <= 0 || n > 1000 {
		return nil, errs.Invalid("first", "must be 1 to 1000")
	}
	return c.ScheduleAction.Query().Where(scheduleaction.ScheduleID(id)).
		Order(ent.Desc(scheduleaction.FieldCreatedAt), ent.Desc(scheduleaction.FieldScheduledAt), ent.Desc(scheduleaction.FieldID)).Limit(n).All(ctx)
}

// NextFireTimes returns a schedule's next n slots from its position (up
// to 1000), each with its jitter.
func NextFireTimes(sc *ent.Schedule, n int) ([]time.Time, error) {
	if n < 0 || n > 1000 {
		return nil, errs.Invalid("n", "must be 0 to 1000")
	}
	if sc.NextSlotAt == nil || n == 0 {
		return []time.Time{}, nil
	}
	spec, err := SpecOf(sc)
	if err != nil {
		return nil, err
	}
	jitter := time.Duration(sc.JitterMs) * time.Millisecond
	slots := append([]time.Time{*sc.NextSlotAt}, spec.Times(*sc.NextSlotAt, n-1)...)
	for i, t := range slots {
		slots[i] = t.Add(Jitter(sc.ID, t, jitter)).UTC()
	}
	return slots, nil
}

func clientOf(ctx context.Context) (*ent.Client, error) {
	if v := viewer.FromContext(ctx); v == nil {
		return nil, errs.E(errs.Unauthenticated, "authentication required")
	}
	c := ent.FromContext(ctx)
	if c == nil {
		return nil, errors.New("schedules: no tenant transaction in context")
	}
	return c, nil
}

// lock authorizes the viewer and locks the schedule.
func (s *Service) lock(ctx context.Context, id string, roles ...string) (*viewer.Viewer, *ent.Client, *ent.Schedule, error) {
	v, c, err := access.Authorize(ctx, roles...)
	if err != nil {
		return nil, nil, nil, err
	}
	sc, err := c.Schedule.Query().Where(schedule.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) || err == nil && !access.InScope(v, sc.EnvironmentID) {
		return nil, nil, nil, errs.NotFoundf("schedule", id)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return v, c, sc, nil
}

// checkInput validates a schedule's input against the input schema of the
// version deployed in the environment now (a run checks it again when it
// starts, against the version then deployed).
func (s *Service) checkInput(ctx context.Context, c *ent.Client, workflowID, envID string, input map[string]any) error {
	dep, err := c.Deployment.Query().Where(deployment.WorkflowID(workflowID), deployment.EnvironmentID(envID), deployment.Active(true)).Only(ctx)
	if ent.IsNotFound(err) {
		return errs.Invalid("input.environmentID", "no version of this workflow is deployed in this environment")
	}
	if err != nil {
		return err
	}
	def, err := s.o.Runs.DefinitionOf(ctx, c, dep.VersionID)
	if err != nil {
		return err
	}
	if input == nil {
		input = map[string]any{}
	}
	if err := def.ValidateInput(input); err != nil {
		var ve *definition.ValidationError
		if errors.As(err, &ve) {
			problems := make([]errs.Problem, 0, len(ve.Problems))
			for _, p := range ve.Problems {
				problems = append(problems, errs.Problem{Path: "input.input" + strings.TrimPrefix(p.Path, "$"), Message: p.Message})
			}
			return errs.InvalidAll("schedule input does not match the workflow's input schema: "+ve.Error(), problems)
		}
		return errs.Invalid("input.input", "%v", err)
	}
	return nil
}

func invalid(problems []errs.Problem) error {
	if len(problems) == 1 {
		return errs.Invalid(problems[0].Path, "%s", problems[0].Message)
	}
	msg := make([]string, len(problems))
	for i, p := range problems {
		msg[i] = p.Path + ": " + p.Message
	}
	return errs.InvalidAll(strings.Join(msg, "; "), problems)
}

// apply writes st's fields to a create or update mutation.
func (st settings) apply(m *ent.ScheduleMutation) {
	setOrClear := func(v *string, set func(string), clear func()) {
		if v != nil {
			set(*v)
		} else {
			clear()
		}
	}
	setOrClear(st.cron, m.SetCron, m.ClearCron)
	setOrClear(st.every, m.SetEvery, m.ClearEvery)
	setOrClear(st.offset, m.SetOffset, m.ClearOffset)
	setOrClear(st.note, m.SetNote, m.ClearNote)
	m.SetTimezone(st.timezone)
	if st.input != nil {
		m.SetInput(st.input)
	}
	m.SetOverlap(st.overlap)
	m.SetCatchupWindowMs(st.catchup.Milliseconds())
	m.SetJitterMs(st.jitter.Milliseconds())
	if st.start != nil {
		m.SetStartAt(*st.start)
	}
	if st.end != nil {
		m.SetEndAt(*st.end)
	}
	m.SetPaused(st.paused)
}

// position sets the schedule's next slot: the first after now.
func position(m *ent.ScheduleMutation, id string, st settings, now time.Time) {
	next, ok := st.spec.Next(now)
	if !ok {
		m.ClearNextSlotAt()
		m.ClearNextFireAt()
		return
	}
	m.SetNextSlotAt(next)
	m.SetNextFireAt(next.Add(Jitter(id, next, st.jitter)))
}

func auditMeta(sc *ent.Schedule) map[string]any {
	m := map[string]any{"workflowID": sc.WorkflowID, "environmentID": sc.EnvironmentID, "timezone": sc.Timezone,
		"overlap": string(sc.Overlap), "paused": sc.Paused}
	if sc.Cron != nil {
		m["cron"] = *sc.Cron
	}
	if sc.Every != nil {
		m["every"] = *sc.Every
	}
	return m
}
