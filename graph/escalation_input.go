package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/escalation/spec"
)

// levelsFromInput converts GraphQL levels to the stored shape; nil when
// absent and not required (an update that leaves levels alone). Validation
// is internal/escalation's.
func levelsFromInput(in []*model.EscalationLevelInput, required bool) []spec.Level {
	if in == nil && !required {
		return nil
	}
	out := make([]spec.Level, 0, len(in))
	for _, l := range in {
		lv := spec.Level{Delay: l.Delay, Condition: spec.IfNotAcknowledged, Targets: []spec.Target{}}
		if l.Condition != nil {
			lv.Condition = *l.Condition
		}
		for _, t := range l.Targets {
			st := spec.Target{WebhookEndpointID: t.WebhookEndpointID, Role: t.Role}
			if t.PagerDuty != nil {
				st.PagerDuty = &spec.PagerDutyTarget{CredentialID: t.PagerDuty.CredentialID, Severity: t.PagerDuty.Severity}
			}
			lv.Targets = append(lv.Targets, st)
		}
		out = append(out, lv)
	}
	return out
}
