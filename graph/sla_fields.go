package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/money"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/slaspec"
)

// Conversions between the GraphQL shapes of SLA objectives and the stored
// ones (internal/slaspec); the domain validates.

func slaCommon(sev model.SLASeverity, esc *string) slaspec.Common {
	return slaspec.Common{Severity: slaspec.Severity(sev), EscalationPolicyID: esc}
}

func objectivesFromInput(in *model.SLAObjectivesInput) slaspec.Objectives {
	var o slaspec.Objectives
	if in == nil {
		return o
	}
	dur := func(d *model.SLADurationObjectiveInput) *slaspec.Duration {
		if d == nil {
			return nil
		}
		return &slaspec.Duration{Common: slaCommon(d.Severity, d.EscalationPolicyID), Duration: d.Duration}
	}
	o.MaxDuration, o.MaxQueueDelay, o.MaxApprovalWait = dur(in.MaxDuration), dur(in.MaxQueueDelay), dur(in.MaxApprovalWait)
	if r := in.MinSuccessRate; r != nil {
		o.MinSuccessRate = &slaspec.SuccessRate{Common: slaCommon(r.Severity, r.EscalationPolicyID), Rate: r.Rate, Window: r.Window,
			MinRuns: r.MinRuns, CountPermanent: r.CountPermanent != nil && *r.CountPermanent}
	}
	if c := in.MaxCostPerRun; c != nil {
		o.MaxCostPerRun = &slaspec.Cost{Common: slaCommon(c.Severity, c.EscalationPolicyID), MicroUSD: int64(c.MicroUsd)}
	}
	if c := in.MaxCostPerWindow; c != nil {
		o.MaxCostPerWindow = &slaspec.WindowCost{Common: slaCommon(c.Severity, c.EscalationPolicyID), MicroUSD: int64(c.MicroUsd), Window: c.Window}
	}
	if d := in.CompleteBy; d != nil {
		o.CompleteBy = &slaspec.Deadline{Common: slaCommon(d.Severity, d.EscalationPolicyID), Cron: d.Cron}
		if d.TimeZone != nil {
			o.CompleteBy.TimeZone = *d.TimeZone
		}
		o.CompleteBy.RequireRun = d.RequireRun != nil && *d.RequireRun
	}
	if e := in.ReleaseRollback; e != nil {
		cm := slaCommon(e.Severity, e.EscalationPolicyID)
		o.ReleaseRollback = &cm
	}
	return o
}

func objectivesToModel(o slaspec.Objectives) *model.SLAObjectives {
	out := &model.SLAObjectives{}
	dur := func(d *slaspec.Duration) *model.SLADurationObjective {
		if d == nil {
			return nil
		}
		return &model.SLADurationObjective{Duration: d.Duration, Severity: model.SLASeverity(d.Severity), EscalationPolicyID: d.EscalationPolicyID}
	}
	out.MaxDuration, out.MaxQueueDelay, out.MaxApprovalWait = dur(o.MaxDuration), dur(o.MaxQueueDelay), dur(o.MaxApprovalWait)
	if r := o.MinSuccessRate; r != nil {
		out.MinSuccessRate = &model.SLASuccessRateObjective{Rate: r.Rate, Window: r.Window, MinRuns: r.MinRuns, CountPermanent: r.CountPermanent,
			Severity: model.SLASeverity(r.Severity), EscalationPolicyID: r.EscalationPolicyID}
	}
	if c := o.MaxCostPerRun; c != nil {
		out.MaxCostPerRun = &model.SLACostObjective{MicroUsd: int(c.MicroUSD), Usd: money.FormatUSD(c.MicroUSD),
			Severity: model.SLASeverity(c.Severity), EscalationPolicyID: c.EscalationPolicyID}
	}
	if c := o.MaxCostPerWindow; c != nil {
		out.MaxCostPerWindow = &model.SLAWindowCostObjective{MicroUsd: int(c.MicroUSD), Usd: money.FormatUSD(c.MicroUSD), Window: c.Window,
			Severity: model.SLASeverity(c.Severity), EscalationPolicyID: c.EscalationPolicyID}
	}
	if d := o.CompleteBy; d != nil {
		tz := d.TimeZone
		if tz == "" {
			tz = "UTC"
		}
		out.CompleteBy = &model.SLACompleteByObjective{Cron: d.Cron, TimeZone: tz, RequireRun: d.RequireRun,
			Severity: model.SLASeverity(d.Severity), EscalationPolicyID: d.EscalationPolicyID}
	}
	if e := o.ReleaseRollback; e != nil {
		out.ReleaseRollback = &model.SLAEventObjective{Severity: model.SLASeverity(e.Severity), EscalationPolicyID: e.EscalationPolicyID}
	}
	return out
}

func effectiveToModel(eff sla.Effective) *model.EffectiveSLA {
	out := &model.EffectiveSLA{Objectives: objectivesToModel(eff.Objectives), Sources: []*model.EffectiveSLAObjective{}}
	for _, name := range slaspec.Names {
		p := eff.Sources[name]
		if p == nil {
			continue
		}
		cm := eff.Objectives.Common(name)
		out.Sources = append(out.Sources, &model.EffectiveSLAObjective{Objective: name, Policy: p,
			Scope: model.SLAScope(sla.ScopeOf(p.WorkflowID, p.EnvironmentID)), Severity: model.SLASeverity(cm.Severity), EscalationPolicyID: cm.EscalationPolicyID})
	}
	return out
}
