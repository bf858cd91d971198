package schedules

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Spec is when a schedule's slots are: a cron expression read in a time
// zone, or a fixed interval with an offset from the Unix epoch; both
// bounded by start and end. robfig/cron only parses the expression: the
// slots are computed here, on the local wall clock, so that daylight
// saving is handled as documented (Next).
type Spec struct {
	cron       *cron.SpecSchedule // nil for an interval
	every      time.Duration
	offset     time.Duration
	loc        *time.Location
	start, end *time.Time
}

// parser takes 5 fields (minute first) or 6 (seconds first, for tests and
// fine schedules), and the descriptors (@daily, @hourly...) except @every.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// MinEvery is the shortest interval.
const MinEvery = time.Second

// ParseCron parses a cron expression of 5 or 6 fields.
func ParseCron(expr string) (*cron.SpecSchedule, error) {
	e := strings.TrimSpace(expr)
	if e == "" {
		return nil, errors.New("empty cron expression")
	}
	if strings.HasPrefix(e, "TZ=") || strings.HasPrefix(e, "CRON_TZ=") {
		return nil, errors.New("a time zone prefix is not taken here: set timezone")
	}
	if strings.HasPrefix(e, "@every") {
		return nil, errors.New("@every is not taken here: set every")
	}
	s, err := parser.Parse(e)
	if err != nil {
		return nil, err
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("unsupported cron expression %q", expr)
	}
	return spec, nil
}

// NewCronSpec returns the spec of a cron expression in loc.
func NewCronSpec(expr string, loc *time.Location, start, end *time.Time) (*Spec, error) {
	c, err := ParseCron(expr)
	if err != nil {
		return nil, err
	}
	return &Spec{cron: c, loc: loc, start: start, end: end}, nil
}

// NewEverySpec returns the spec of an interval: slots at the Unix epoch
// plus offset plus any multiple of every.
func NewEverySpec(every, offset time.Duration, start, end *time.Time) (*Spec, error) {
	if every < MinEvery {
		return nil, fmt.Errorf("must be at least %s", MinEvery)
	}
	if offset < 0 || offset >= every {
		return nil, fmt.Errorf("offset must be at least 0 and less than every (%s)", every)
	}
	return &Spec{every: every, offset: offset, loc: time.UTC, start: start, end: end}, nil
}

// Next returns the first slot strictly after after, or false when there is
// none (past end, or a cron expression that never matches within 5 years).
//
// Cron slots are wall-clock times in the spec's location. A wall-clock
// time that does not exist (the hour skipped when clocks spring forward)
// runs at the first instant after the gap, the transition itself; several
// such times collapse into that one slot. A wall-clock time that happens
// twice (the hour repeated when clocks fall back) runs once, at its first
// occurrence.
func (s *Spec) Next(after time.Time) (time.Time, bool) {
	if s.start != nil && after.Before(*s.start) {
		after = s.start.Add(-time.Nanosecond)
	}
	var t time.Time
	if s.cron == nil {
		t = s.nextEvery(after)
	} else {
		var ok bool
		if t, ok = s.nextCron(after); !ok {
			return time.Time{}, false
		}
	}
	if s.end != nil && t.After(*s.end) {
		return time.Time{}, false
	}
	return t, true
}

// Times returns up to n slots after after.
func (s *Spec) Times(after time.Time, n int) []time.Time {
	out := make([]time.Time, 0, n)
	for len(out) < n {
		t, ok := s.Next(after)
		if !ok {
			break
		}
		out = append(out, t)
		after = t
	}
	return out
}

func (s *Spec) nextEvery(after time.Time) time.Time {
	ns := after.UnixNano() - int64(s.offset)
	k := ns / int64(s.every)
	if ns < 0 && ns%int64(s.every) != 0 {
		k-- // floor division
	}
	return time.Unix(0, (k+1)*int64(s.every)+int64(s.offset)).UTC()
}

// nextCron walks wall-clock times (kept as UTC times, where no clock ever
// jumps) from after's wall clock, and maps each match to an instant.
func (s *Spec) nextCron(after time.Time) (time.Time, bool) {
	local := after.In(s.loc)
	wall := time.Date(local.Year(), local.Month(), local.Day(), local.Hour(), local.Minute(), local.Second(), 0, time.UTC)
	limit := wall.Year() + 5
	for {
		var ok bool
		wall, ok = nextWall(s.cron, wall, limit)
		if !ok {
			return time.Time{}, false
		}
		if t := instant(wall, s.loc); t.After(after) {
			return t.UTC(), true
		}
		// A wall-clock time of the repeated hour whose first occurrence is
		// already past: it ran then.
	}
}

const starBit = 1 << 63

// nextWall returns the first wall-clock time strictly after wall matching
// the expression's fields (the walk of robfig/cron's Next, on a clock
// without daylight saving).
func nextWall(c *cron.SpecSchedule, wall time.Time, limitYear int) (time.Time, bool) {
	t := wall.Add(time.Second).Truncate(time.Second)
	for t.Year() <= limitYear {
		switch {
		case 1<<uint(t.Month())&c.Month == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		case !dayMatches(c, t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		case 1<<uint(t.Hour())&c.Hour == 0:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case 1<<uint(t.Minute())&c.Minute == 0:
			t = t.Truncate(time.Minute).Add(time.Minute)
		case 1<<uint(t.Second())&c.Second == 0:
			t = t.Add(time.Second)
		default:
			return t, true
		}
	}
	return time.Time{}, false
}

// dayMatches: with both day fields restricted, either may match (cron's
// rule); with one a star, the other decides.
func dayMatches(c *cron.SpecSchedule, t time.Time) bool {
	dom := 1<<uint(t.Day())&c.Dom > 0
	dow := 1<<uint(t.Weekday())&c.Dow > 0
	if c.Dom&starBit > 0 || c.Dow&starBit > 0 {
		return dom && dow
	}
	return dom || dow
}

// instant maps a wall-clock time in loc to an instant: its first
// occurrence when it happens twice, and the end of the gap when it does
// not happen at all.
func instant(wall time.Time, loc *time.Location) time.Time {
	u := wall.Unix()
	_, before := time.Unix(u-86400, 0).In(loc).Zone()
	_, after := time.Unix(u+86400, 0).In(loc).Zone()
	var valid []time.Time
	for _, off := range []int{before, after} {
		t := time.Unix(u-int64(off), 0).In(loc)
		if sameWall(t, wall) {
			valid = append(valid, t)
		}
	}
	switch {
	case len(valid) == 2 && valid[1].Before(valid[0]):
		return valid[1]
	case len(valid) > 0:
		return valid[0]
	}
	// In a gap: the instant the later offset took effect.
	t := time.Unix(u-int64(min(before, after)), 0).In(loc)
	if start, _ := t.ZoneBounds(); !start.IsZero() {
		return start
	}
	return t
}

func sameWall(t, wall time.Time) bool {
	y, m, d := t.Date()
	wy, wm, wd := wall.Date()
	return y == wy && m == wm && d == wd && t.Hour() == wall.Hour() && t.Minute() == wall.Minute() && t.Second() == wall.Second()
}

// Jitter is how long after slot the slot fires: a deterministic amount in
// [0, jitter) from the schedule and the slot, so that every worker
// computes the same.
func Jitter(scheduleID string, slot time.Time, jitter time.Duration) time.Duration {
	if jitter <= 0 {
		return 0
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d", scheduleID, slot.UnixNano())
	return time.Duration(h.Sum64() % uint64(jitter))
}
