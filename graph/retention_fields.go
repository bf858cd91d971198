package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/retention"
)

// retentionPolicyModel is a level's policy as GraphQL shows it.
func retentionPolicyModel(p *retention.Policy) *model.RetentionPolicy {
	m := &model.RetentionPolicy{
		Scope: p.Scope, PayloadDays: p.Set.Payload, RunDays: p.Set.Run, AuditDays: p.Set.Audit,
		WebhookDeliveryDays: p.Set.WebhookDelivery,
		Effective: &model.RetentionDays{PayloadDays: p.Effective.Payload, RunDays: p.Effective.Run,
			AuditDays: p.Effective.Audit, WebhookDeliveryDays: p.Effective.WebhookDelivery},
		UpdatedBy: p.UpdatedBy, UpdatedAt: p.UpdatedAt,
	}
	if p.TargetID != "" {
		t := p.TargetID
		m.TargetID = &t
	}
	return m
}

// retentionInput is the domain form of RetentionPolicyInput.
func retentionInput(in model.RetentionPolicyInput) retention.Input {
	out := retention.Input{Scope: in.Scope, Days: retention.Days{
		Payload: in.PayloadDays, Run: in.RunDays, Audit: in.AuditDays, WebhookDelivery: in.WebhookDeliveryDays}}
	if in.TargetID != nil {
		out.TargetID = *in.TargetID
	}
	return out
}
