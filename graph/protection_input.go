package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/protection"
	"github.com/sluicehq/sluice/internal/protectspec"
)

// protectionInput turns setEnvironmentProtection's input into the stored
// definition; omitted fields are empty (the defaults apply).
func protectionInput(in model.SetEnvironmentProtectionInput) protection.SetInput {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	p := protectspec.Protection{ApproverRoles: in.ApproverRoles, ApprovalTimeout: str(in.ApprovalTimeout)}
	if in.RequiredApprovals != nil {
		p.RequiredApprovals = *in.RequiredApprovals
	}
	if e := in.Evaluation; e != nil {
		p.Evaluation = &protectspec.EvaluationRule{MaxAge: str(e.MaxAge), MinPassRate: e.MinPassRate, MaxRegressions: e.MaxRegressions,
			MaxCostIncreasePct: e.MaxCostIncreasePct, MaxP95IncreasePct: e.MaxP95IncreasePct}
	}
	for _, w := range in.FreezeWindows {
		if w == nil {
			continue
		}
		p.FreezeWindows = append(p.FreezeWindows, protectspec.FreezeWindow{Name: str(w.Name), Start: w.Start, End: w.End,
			Days: w.Days, From: str(w.From), To: str(w.To), TimeZone: str(w.TimeZone)})
	}
	return protection.SetInput{EnvironmentID: in.EnvironmentID, Protection: p}
}

// nullIfEmpty answers null for an ApprovalRequest's run fields, which a
// DEPLOYMENT request leaves NULL (Ent reads them as "").
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
