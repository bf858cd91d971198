// Package protectspec is the definition of an environment's protection
// (stored as JSON on the environment): the approvals a deploy or release
// into it needs, the evaluation it must have passed, and its freeze
// windows. It validates a protection and answers whether a moment falls in
// a freeze window. It is a leaf: the control plane reads it to refuse
// deploys, internal/protection enforces the rest.
package protectspec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Limits and defaults.
const (
	DefaultApprovalTimeout = 72 * time.Hour
	MaxApprovalTimeout     = 30 * 24 * time.Hour
	DefaultEvaluationAge   = 7 * 24 * time.Hour
	MaxEvaluationAge       = 90 * 24 * time.Hour
	MaxApprovals           = 10
	MaxFreezeWindows       = 50
)

// DefaultApproverRoles approve when a protection names none.
var DefaultApproverRoles = []string{viewer.RoleAdmin, viewer.RoleOwner}

// Protection is what an environment requires of deploys and releases into
// it. The zero value protects nothing.
type Protection struct {
	// RequiredApprovals distinct approvers, other than the requester,
	// holding one of ApproverRoles (admins and owners when empty).
	RequiredApprovals int      `json:"requiredApprovals"`
	ApproverRoles     []string `json:"approverRoles,omitempty"`
	// Evaluation, when set, requires a passing evaluation of the candidate.
	Evaluation *EvaluationRule `json:"evaluation,omitempty"`
	// ApprovalTimeout is how long a request waits before it expires (Go
	// duration; 72h when empty).
	ApprovalTimeout string         `json:"approvalTimeout,omitempty"`
	FreezeWindows   []FreezeWindow `json:"freezeWindows,omitempty"`
}

// EvaluationRule is the evaluation a candidate must have passed.
type EvaluationRule struct {
	// MaxAge of the evaluation, from its end (Go duration; 168h when empty).
	MaxAge             string   `json:"maxAge,omitempty"`
	MinPassRate        *float64 `json:"minPassRate,omitempty"`
	MaxRegressions     *int     `json:"maxRegressions,omitempty"`
	MaxCostIncreasePct *float64 `json:"maxCostIncreasePct,omitempty"`
	MaxP95IncreasePct  *float64 `json:"maxP95IncreasePct,omitempty"`
}

// FreezeWindow is a time when nothing is deployed: either one-off (Start
// and End) or weekly (Days, From and To in TimeZone; To at or before From
// crosses midnight into the next day).
type FreezeWindow struct {
	Name     string     `json:"name,omitempty"`
	Start    *time.Time `json:"start,omitempty"`
	End      *time.Time `json:"end,omitempty"`
	Days     []string   `json:"days,omitempty"`
	From     string     `json:"from,omitempty"`
	To       string     `json:"to,omitempty"`
	TimeZone string     `json:"timeZone,omitempty"`
}

var weekdays = []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}

// Active reports whether p requires anything.
func (p *Protection) Active() bool {
	return p != nil && (p.RequiredApprovals > 0 || p.Evaluation != nil || len(p.FreezeWindows) > 0)
}

// Roles are the roles that approve.
func (p *Protection) Roles() []string {
	if p == nil || len(p.ApproverRoles) == 0 {
		return slices.Clone(DefaultApproverRoles)
	}
	return slices.Clone(p.ApproverRoles)
}

// Timeout is how long a request waits.
func (p *Protection) Timeout() time.Duration {
	if p == nil || p.ApprovalTimeout == "" {
		return DefaultApprovalTimeout
	}
	d, _ := time.ParseDuration(p.ApprovalTimeout)
	return d
}

// Age is how old a passing evaluation may be (MaxAge, or the default).
func (r *EvaluationRule) Age() time.Duration {
	if r == nil || r.MaxAge == "" {
		return DefaultEvaluationAge
	}
	d, _ := time.ParseDuration(r.MaxAge)
	return d
}

// Normalize upper-cases days and lower-cases roles, in place.
func (p *Protection) Normalize() {
	for i, r := range p.ApproverRoles {
		p.ApproverRoles[i] = strings.ToLower(strings.TrimSpace(r))
	}
	for i := range p.FreezeWindows {
		for j, d := range p.FreezeWindows[i].Days {
			// "monday" is MON; anything else stays as given, to be refused.
			if u := strings.ToUpper(strings.TrimSpace(d)); len(u) >= 3 && slices.Contains(weekdays, u[:3]) {
				p.FreezeWindows[i].Days[j] = u[:3]
			}
		}
	}
}

// Validate lists what is wrong with p, each problem at its path under
// prefix (such as "input").
func (p *Protection) Validate(prefix string) []errs.Problem {
	var out []errs.Problem
	add := func(path, format string, args ...any) {
		out = append(out, errs.Problem{Path: prefix + "." + path, Message: fmt.Sprintf(format, args...)})
	}
	if p.RequiredApprovals < 0 || p.RequiredApprovals > MaxApprovals {
		add("requiredApprovals", "must be between 0 and %d", MaxApprovals)
	}
	for i, r := range p.ApproverRoles {
		if !viewer.KnownRole(r) {
			add("approverRoles["+strconv.Itoa(i)+"]", "unknown role %q: one of %s", r, strings.Join(viewer.Roles, ", "))
		}
	}
	if p.ApprovalTimeout != "" {
		if d, err := time.ParseDuration(p.ApprovalTimeout); err != nil || d < time.Minute || d > MaxApprovalTimeout {
			add("approvalTimeout", "must be a duration such as 72h, between 1m and 720h")
		}
	}
	if e := p.Evaluation; e != nil {
		if e.MaxAge != "" {
			if d, err := time.ParseDuration(e.MaxAge); err != nil || d <= 0 || d > MaxEvaluationAge {
				add("evaluation.maxAge", "must be a duration such as 168h, at most 2160h")
			}
		}
		if e.MinPassRate != nil && (*e.MinPassRate < 0 || *e.MinPassRate > 1) {
			add("evaluation.minPassRate", "must be between 0 and 1")
		}
		if e.MaxRegressions != nil && *e.MaxRegressions < 0 {
			add("evaluation.maxRegressions", "must not be negative")
		}
		if e.MaxCostIncreasePct != nil && *e.MaxCostIncreasePct < 0 {
			add("evaluation.maxCostIncreasePct", "must not be negative")
		}
		if e.MaxP95IncreasePct != nil && *e.MaxP95IncreasePct < 0 {
			add("evaluation.maxP95IncreasePct", "must not be negative")
		}
	}
	if len(p.FreezeWindows) > MaxFreezeWindows {
		add("freezeWindows", "at most %d windows", MaxFreezeWindows)
	}
	for i, w := range p.FreezeWindows {
		path := "freezeWindows[" + strconv.Itoa(i) + "]"
		if len(w.Name) > 100 {
			add(path+".name", "must be at most 100 characters")
		}
		if w.TimeZone != "" {
			if _, err := time.LoadLocation(w.TimeZone); err != nil {
				add(path+".timeZone", "unknown time zone %q (an IANA name such as Europe/Paris)", w.TimeZone)
			}
		}
		oneOff := w.Start != nil || w.End != nil
		weekly := len(w.Days) > 0 || w.From != "" || w.To != ""
		switch {
		case oneOff && weekly:
			add(path, "is either one-off (start, end) or weekly (days, from, to), not both")
		case oneOff:
			if w.Start == nil {
				add(path+".start", "is required with end")
			}
			if w.End == nil {
				add(path+".end", "is required with start")
			}
			if w.Start != nil && w.End != nil && !w.End.After(*w.Start) {
				add(path+".end", "must be after start")
			}
		case weekly:
			if len(w.Days) == 0 {
				add(path+".days", "at least one day (MON..SUN)")
			}
			for j, d := range w.Days {
				if !slices.Contains(weekdays, d) {
					add(path+".days["+strconv.Itoa(j)+"]", "must be one of %s", strings.Join(weekdays, ", "))
				}
			}
			if _, ok := clock(w.From); !ok {
				add(path+".from", "must be a time of day HH:MM")
			}
			if _, ok := clock(w.To); !ok {
				add(path+".to", "must be a time of day HH:MM")
			}
		default:
			add(path, "needs start and end, or days, from and to")
		}
	}
	return out
}

// clock parses HH:MM into minutes since midnight.
func clock(s string) (int, bool) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, false
	}
	return t.Hour()*60 + t.Minute(), true
}

// Freeze is a window that holds a moment: its description and when it ends.
type Freeze struct {
	Window FreezeWindow
	Ends   time.Time
}

// Describe names the window for a message.
func (f Freeze) Describe() string {
	w := f.Window
	name := ""
	if w.Name != "" {
		name = strconv.Quote(w.Name) + " "
	}
	if w.Start != nil {
		return fmt.Sprintf("freeze window %s(%s to %s)", name, w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339))
	}
	tz := w.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return fmt.Sprintf("weekly freeze window %s(%s %s-%s %s)", name, strings.Join(w.Days, ","), w.From, w.To, tz)
}

// FrozenAt returns the freeze window that holds now, if any (the one that
// ends last when several do).
func (p *Protection) FrozenAt(now time.Time) (Freeze, bool) {
	var best Freeze
	found := false
	if p == nil {
		return best, false
	}
	for _, w := range p.FreezeWindows {
		end, ok := w.holds(now)
		if ok && (!found || end.After(best.Ends)) {
			best, found = Freeze{Window: w, Ends: end}, true
		}
	}
	return best, found
}

// holds reports whether the window holds now and, if so, when it ends.
func (w FreezeWindow) holds(now time.Time) (time.Time, bool) {
	if w.Start != nil && w.End != nil {
		return *w.End, !now.Before(*w.Start) && now.Before(*w.End)
	}
	from, ok1 := clock(w.From)
	to, ok2 := clock(w.To)
	if !ok1 || !ok2 || len(w.Days) == 0 {
		return time.Time{}, false
	}
	loc := time.UTC
	if w.TimeZone != "" {
		if l, err := time.LoadLocation(w.TimeZone); err == nil {
			loc = l
		}
	}
	local := now.In(loc)
	minute := local.Hour()*60 + local.Minute()
	day := func(t time.Time) bool { return slices.Contains(w.Days, weekdays[t.Weekday()]) }
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	at := func(base time.Time, m int) time.Time {
		return time.Date(base.Year(), base.Month(), base.Day(), m/60, m%60, 0, 0, loc).UTC()
	}
	if from < to {
		if day(local) && minute >= from && minute < to {
			return at(midnight, to), true
		}
		return time.Time{}, false
	}
	// Crosses midnight: from today's From to tomorrow's To.
	if day(local) && minute >= from {
		return at(midnight.AddDate(0, 0, 1), to), true
	}
	if day(midnight.AddDate(0, 0, -1)) && minute < to {
		return at(midnight, to), true
	}
	return time.Time{}, false
}

// Vote is one approver's approval of a deployment request.
type Vote struct {
	Subject string    `json:"subject"`
	Roles   []string  `json:"roles,omitempty"`
	Comment string    `json:"comment,omitempty"`
	At      time.Time `json:"at"`
}
