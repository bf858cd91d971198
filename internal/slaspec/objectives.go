// Package slaspec is the shape of an SLA policy's objectives as stored (the
// JSON of sla_policies.objectives) with its validation: a leaf, so that the
// Ent schema, internal/sla and the tenant manifest share one definition.
package slaspec

import (
	"fmt"
	"time"

	"github.com/robfig/cron/v3"
)

// Severity of an objective's incidents, as PagerDuty names them.
type Severity string

const (
	Critical Severity = "CRITICAL"
	Error    Severity = "ERROR"
	Warning  Severity = "WARNING"
	Info     Severity = "INFO"
)

// Valid reports whether s is one of the four severities.
func (s Severity) Valid() bool {
	switch s {
	case Critical, Error, Warning, Info:
		return true
	}
	return false
}

// Objective names, as in GraphQL and in incidents and webhook payloads.
const (
	MaxDuration      = "maxDuration"
	MaxQueueDelay    = "maxQueueDelay"
	MaxApprovalWait  = "maxApprovalWait"
	MinSuccessRate   = "minSuccessRate"
	MaxCostPerRun    = "maxCostPerRun"
	MaxCostPerWindow = "maxCostPerWindow"
	CompleteBy       = "completeBy"
	ReleaseRollback  = "releaseRollback"
)

// Names lists every objective, in the order they are shown.
var Names = []string{MaxDuration, MaxQueueDelay, MaxApprovalWait, MinSuccessRate, MaxCostPerRun, MaxCostPerWindow, CompleteBy, ReleaseRollback}

// PerRun reports whether an objective is judged run by run (its incidents
// resolve only by hand) rather than over a window (they resolve by
// themselves once the objective holds again).
func PerRun(name string) bool {
	switch name {
	case MaxDuration, MaxQueueDelay, MaxApprovalWait, MaxCostPerRun, ReleaseRollback:
		return true
	}
	return false
}

// Common is what every objective has.
type Common struct {
	Severity           Severity `json:"severity"`
	EscalationPolicyID *string  `json:"escalationPolicyID,omitempty"`
}

// Duration is an objective bounding a time: maxDuration (a run, created to
// finished), maxQueueDelay (created to its first step started),
// maxApprovalWait (an approval request open).
type Duration struct {
	Common
	// Duration is a Go duration ("30s", "2h").
	Duration string `json:"duration"`
}

// SuccessRate is minSuccessRate: of the live runs that finished in the
// last Window, at least Rate succeeded, judged once MinRuns finished.
type SuccessRate struct {
	Common
	Rate    float64 `json:"rate"`
	Window  string  `json:"window"`
	MinRuns int     `json:"minRuns"`
	// CountPermanent counts runs failed with class `permanent` (bad input)
	// as failures; by default they are left out of the rate.
	CountPermanent bool `json:"countPermanent"`
}

// Cost is maxCostPerRun: one run's cost, judged when it finishes.
type Cost struct {
	Common
	MicroUSD int64 `json:"microUSD"`
}

// WindowCost is maxCostPerWindow: the cost of the live runs finished in
// the last Window.
type WindowCost struct {
	Common
	MicroUSD int64  `json:"microUSD"`
	Window   string `json:"window"`
}

// Deadline is completeBy: at each instant of Cron (in TimeZone), every live
// run of the scope created since the previous instant has succeeded. A
// run still unfinished or failed at the instant is a breach; no run at all
// is a breach only when RequireRun is set.
type Deadline struct {
	Common
	Cron       string `json:"cron"`
	TimeZone   string `json:"timeZone"`
	RequireRun bool   `json:"requireRun"`
}

// Objectives are a policy's objectives; each is optional.
type Objectives struct {
	MaxDuration      *Duration    `json:"maxDuration,omitempty"`
	MaxQueueDelay    *Duration    `json:"maxQueueDelay,omitempty"`
	MaxApprovalWait  *Duration    `json:"maxApprovalWait,omitempty"`
	MinSuccessRate   *SuccessRate `json:"minSuccessRate,omitempty"`
	MaxCostPerRun    *Cost        `json:"maxCostPerRun,omitempty"`
	MaxCostPerWindow *WindowCost  `json:"maxCostPerWindow,omitempty"`
	CompleteBy       *Deadline    `json:"completeBy,omitempty"`
	// ReleaseRollback: a release's analysis rolled its candidate back
	// (internal/releases). One incident per workflow and environment.
	ReleaseRollback *Common `json:"releaseRollback,omitempty"`
}

// Common returns the common part of the objective called name, or nil when
// the policy does not set it.
func (o Objectives) Common(name string) *Common {
	switch name {
	case MaxDuration:
		if o.MaxDuration != nil {
			return &o.MaxDuration.Common
		}
	case MaxQueueDelay:
		if o.MaxQueueDelay != nil {
			return &o.MaxQueueDelay.Common
		}
	case MaxApprovalWait:
		if o.MaxApprovalWait != nil {
			return &o.MaxApprovalWait.Common
		}
	case MinSuccessRate:
		if o.MinSuccessRate != nil {
			return &o.MinSuccessRate.Common
		}
	case MaxCostPerRun:
		if o.MaxCostPerRun != nil {
			return &o.MaxCostPerRun.Common
		}
	case MaxCostPerWindow:
		if o.MaxCostPerWindow != nil {
			return &o.MaxCostPerWindow.Common
		}
	case CompleteBy:
		if o.CompleteBy != nil {
			return &o.CompleteBy.Common
		}
	case ReleaseRollback:
		return o.ReleaseRollback
	}
	return nil
}

// Has reports whether the objective called name is set.
func (o Objectives) Has(name string) bool { return o.Common(name) != nil }

// Empty reports whether no objective is set.
func (o Objectives) Empty() bool {
	for _, n := range Names {
		if o.Has(n) {
			return false
		}
	}
	return true
}

// Problem is one invalid field, with its path under the objectives.
type Problem struct {
	Path    string
	Message string
}

// MinWindow is the shortest window a window objective may have.
const MinWindow = time.Second

// Validate lists every problem of o; paths are relative to the objectives
// ("maxDuration.duration").
func (o Objectives) Validate() []Problem {
	var out []Problem
	bad := func(path, format string, args ...any) {
		out = append(out, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	common := func(name string, c Common) {
		if !c.Severity.Valid() {
			bad(name+".severity", "must be CRITICAL, ERROR, WARNING or INFO")
		}
		if c.EscalationPolicyID != nil && *c.EscalationPolicyID == "" {
			bad(name+".escalationPolicyID", "must not be empty; leave it out for no escalation")
		}
	}
	duration := func(path, v string) {
		if d, err := time.ParseDuration(v); err != nil {
			bad(path, "must be a duration such as 30s or 2h (got %q)", v)
		} else if d <= 0 {
			bad(path, "must be positive (got %q)", v)
		}
	}
	window := func(path, v string) {
		if d, err := time.ParseDuration(v); err != nil {
			bad(path, "must be a duration such as 1h (got %q)", v)
		} else if d < MinWindow {
			bad(path, "must be at least %s (got %q)", MinWindow, v)
		}
	}
	for _, d := range []struct {
		name string
		o    *Duration
	}{{MaxDuration, o.MaxDuration}, {MaxQueueDelay, o.MaxQueueDelay}, {MaxApprovalWait, o.MaxApprovalWait}} {
		if d.o == nil {
			continue
		}
		common(d.name, d.o.Common)
		duration(d.name+".duration", d.o.Duration)
	}
	if r := o.MinSuccessRate; r != nil {
		common(MinSuccessRate, r.Common)
		if r.Rate < 0 || r.Rate > 1 {
			bad(MinSuccessRate+".rate", "must be between 0 and 1 (got %v)", r.Rate)
		}
		window(MinSuccessRate+".window", r.Window)
		if r.MinRuns < 1 {
			bad(MinSuccessRate+".minRuns", "must be at least 1 (got %d)", r.MinRuns)
		}
	}
	if c := o.MaxCostPerRun; c != nil {
		common(MaxCostPerRun, c.Common)
		if c.MicroUSD <= 0 {
			bad(MaxCostPerRun+".microUSD", "must be positive (got %d)", c.MicroUSD)
		}
	}
	if c := o.MaxCostPerWindow; c != nil {
		common(MaxCostPerWindow, c.Common)
		if c.MicroUSD <= 0 {
			bad(MaxCostPerWindow+".microUSD", "must be positive (got %d)", c.MicroUSD)
		}
		window(MaxCostPerWindow+".window", c.Window)
	}
	if c := o.ReleaseRollback; c != nil {
		common(ReleaseRollback, *c)
	}
	if d := o.CompleteBy; d != nil {
		common(CompleteBy, d.Common)
		if _, err := ParseCron(d.Cron); err != nil {
			bad(CompleteBy+".cron", "invalid cron expression %q: %v", d.Cron, err)
		}
		if _, err := LoadZone(d.TimeZone); err != nil {
			bad(CompleteBy+".timeZone", "unknown time zone %q", d.TimeZone)
		}
	}
	return out
}

// ParseCron parses a standard five-field cron expression (minute hour
// day-of-month month day-of-week) or a descriptor such as @daily.
func ParseCron(expr string) (cron.Schedule, error) {
	return cron.ParseStandard(expr)
}

// LoadZone loads an IANA time zone; empty means UTC.
func LoadZone(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	return time.LoadLocation(name)
}

// MustDuration parses a duration validated before (Validate).
func MustDuration(v string) time.Duration {
	d, _ := time.ParseDuration(v)
	return d
}
