package escalation

import (
	"context"
	"slices"
	"time"

	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/escalation"
	"github.com/sluicehq/sluice/ent/member"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Firing outcomes.
const (
	OutcomeFired   = "fired"
	OutcomeSkipped = "skipped"
)

// FireDue fires an escalation's current level if it is due (the handler of
// its queue task). The level is fired in one transaction that locks the
// escalation's row (after the run's, for an approval) and re-checks its
// state and due time, so a duplicate or late wake-up fires nothing twice.
// level and loop are those the wake-up was sent for (TaskLevel), or -1
// when unknown: a wake-up for a level already passed does nothing.
func (s *Service) FireDue(ctx context.Context, tenantID, escalationID string, level, loop int) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	return store.InTenant(ctx, s.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		e, err := c.Escalation.Get(ctx, escalationID)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.NextFireAt == nil || (level >= 0 && (level != e.Level || loop != e.Loop)) {
			return nil
		}
		if now := s.now(); e.NextFireAt.After(now) {
			// Woken early (the queue schedules in whole seconds): wake again
			// when due.
			t := levelTask(tenantID, e)
			t.Variant += "r" + now.Format("150405.000")
			s.dispatchAfterCommit(ctx, t)
			return nil
		}
		if e.SubjectKind == escalation.SubjectKindApproval && e.RunID != "" && s.runs != nil {
			err := s.runs.WithRunLock(ctx, c, e.RunID, func(emit func(string, map[string]any)) error {
				return s.fireLocked(ctx, c, tenantID, escalationID, emit)
			})
			if errs.CodeOf(err) == errs.NotFound {
				// The run is gone: nothing is left to page about.
				locked, lerr := c.Escalation.Query().Where(escalation.ID(escalationID)).ForUpdate().Only(ctx)
				if lerr != nil {
					return lerr
				}
				return s.resolve(ctx, c, tenantID, locked, "run gone", s.now())
			}
			return err
		}
		return s.fireLocked(ctx, c, tenantID, escalationID, nil)
	})
}

// fireLocked fires the current level of an escalation under its row lock,
// records it and schedules the next one (or ends the escalation).
func (s *Service) fireLocked(ctx context.Context, c *ent.Client, tenantID, id string, emit func(string, map[string]any)) error {
	e, err := c.Escalation.Query().Where(escalation.ID(id)).ForUpdate().Only(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	if e.NextFireAt == nil || e.NextFireAt.After(now) || e.Level >= len(e.Levels) ||
		(e.Status != escalation.StatusActive && e.Status != escalation.StatusAcknowledged) {
		return nil
	}
	lvl := e.Levels[e.Level]
	f := spec.Firing{Level: e.Level + 1, Loop: e.Loop, At: now, Targets: lvl.Targets, Outcome: OutcomeSkipped}
	if holds(lvl.Condition, e.Status) {
		f.Outcome = OutcomeFired
		if err := s.page(ctx, c, tenantID, e, lvl, &f, emit, now); err != nil {
			return err
		}
	}
	level, loop := e.Level+1, e.Loop
	if level >= len(e.Levels) {
		level, loop = 0, loop+1
	}
	u := e.Update().AppendFirings([]spec.Firing{f}).SetLevel(level).SetLoop(loop).SetUpdatedAt(now)
	switch {
	case loop > e.Repeat:
		u.ClearNextFireAt()
		if e.Status == escalation.StatusActive {
			u.SetStatus(escalation.StatusExhausted)
		}
	case e.Status == escalation.StatusAcknowledged && !hasCondition(e.Levels, spec.IfNotResolved):
		u.ClearNextFireAt()
	default:
		u.SetNextFireAt(now.Add(e.Levels[level].DelayDuration()))
	}
	e, err = u.Save(ctx)
	if err != nil {
		return err
	}
	if e.NextFireAt != nil {
		s.dispatchAfterCommit(ctx, levelTask(tenantID, e))
	}
	return nil
}

// holds reports whether a level's condition holds for an escalation in
// status st (active or acknowledged).
func holds(c spec.Condition, st escalation.Status) bool {
	if c == spec.IfNotResolved {
		return st == escalation.StatusActive || st == escalation.StatusAcknowledged
	}
	return st == escalation.StatusActive
}

// page notifies a level's targets and records what it wrote in f.
func (s *Service) page(ctx context.Context, c *ent.Client, tenantID string, e *ent.Escalation, lvl spec.Level, f *spec.Firing, emit func(string, map[string]any), now time.Time) error {
	var endpointIDs []string
	var targets []map[string]any
	for _, t := range lvl.Targets {
		switch {
		case t.WebhookEndpointID != nil:
			endpointIDs = append(endpointIDs, *t.WebhookEndpointID)
			targets = append(targets, map[string]any{"webhookEndpointID": *t.WebhookEndpointID})
		case t.Role != nil:
			members, err := c.Member.Query().
				Where(func(sel *sql.Selector) { sel.Where(sqljson.ValueContains(member.FieldRoles, *t.Role)) }).
				Select(member.FieldSubject).Strings(ctx)
			if err != nil {
				return err
			}
			slices.Sort(members)
			for _, m := range members {
				if !slices.Contains(f.Members, m) {
					f.Members = append(f.Members, m)
				}
			}
			targets = append(targets, map[string]any{"role": *t.Role, "members": members})
		case t.PagerDuty != nil:
			sev := e.Severity
			if t.PagerDuty.Severity != nil {
				sev = *t.PagerDuty.Severity
			}
			p, err := s.newSend(ctx, c, e, t.PagerDuty.CredentialID, pagerdutysend.ActionTrigger, s.pdPayload(e, sev, f, now), now)
			if err != nil {
				return err
			}
			f.PagerDutySendIDs = append(f.PagerDutySendIDs, p.ID)
			s.dispatchAfterCommit(ctx, sendTask(tenantID, p))
			targets = append(targets, map[string]any{"pagerDuty": map[string]any{"credentialID": t.PagerDuty.CredentialID, "sendID": p.ID}})
		}
	}
	data := map[string]any{
		"escalationID": e.ID,
		"policyID":     e.PolicyID,
		"policyName":   e.PolicyName,
		"subjectKind":  string(e.SubjectKind),
		"subjectID":    e.SubjectID,
		"level":        f.Level,
		"loop":         f.Loop,
		"targets":      targets,
		"summary":      e.Summary,
		"severity":     e.Severity,
	}
	if len(f.Members) > 0 {
		data["members"] = f.Members
	}
	typ := eventtype.IncidentEscalated
	if e.SubjectKind == escalation.SubjectKindApproval {
		typ = eventtype.ApprovalEscalated
		data["approvalID"] = e.SubjectID
		data["runID"] = e.RunID
		if emit != nil {
			// The run event reaches every endpoint that wants
			// approval.escalated (the run's webhook outbox); the level's own
			// endpoints that do not want it are added below.
			stepID, _ := e.Details["stepID"].(string)
			emit(stepID, data)
			subscribed, err := s.subscribed(ctx, c, typ)
			if err != nil {
				return err
			}
			endpointIDs = slices.DeleteFunc(endpointIDs, func(id string) bool { return slices.Contains(subscribed, id) })
		}
	} else {
		data["incidentID"] = e.SubjectID
		// An incident's level is announced to every endpoint that wants
		// incident.escalated, and to the level's own endpoints: one
		// delivery each.
		subscribed, err := s.subscribed(ctx, c, typ)
		if err != nil {
			return err
		}
		for _, id := range subscribed {
			if !slices.Contains(endpointIDs, id) {
				endpointIDs = append(endpointIDs, id)
			}
		}
	}
	if len(endpointIDs) > 0 && s.webhooks != nil {
		ids, err := s.webhooks.RecordEvent(ctx, c, tenantID, webhook.Event{Type: typ, Data: data, EndpointIDs: endpointIDs}, now)
		if err != nil {
			return err
		}
		f.WebhookDeliveryIDs = append(f.WebhookDeliveryIDs, ids...)
	}
	return nil
}

// subscribed lists the enabled endpoints that want events of type typ.
func (s *Service) subscribed(ctx context.Context, c *ent.Client, typ eventtype.Type) ([]string, error) {
	eps, err := c.WebhookEndpoint.Query().Where(webhookendpoint.Enabled(true)).
		Select(webhookendpoint.FieldID, webhookendpoint.FieldEventTypes).All(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ep := range eps {
		if len(ep.EventTypes) == 0 || slices.Contains(ep.EventTypes, string(typ)) {
			out = append(out, ep.ID)
		}
	}
	return out, nil
}

// pdPayload is the payload of a PagerDuty trigger (Events API v2).
func (s *Service) pdPayload(e *ent.Escalation, severity string, f *spec.Firing, now time.Time) map[string]any {
	summary := e.Summary
	if summary == "" {
		summary = e.SubjectKind.String() + " " + e.SubjectID
	}
	if len(summary) > 1024 {
		summary = summary[:1024]
	}
	details := map[string]any{"escalationID": e.ID, "subjectKind": string(e.SubjectKind), "subjectID": e.SubjectID,
		"level": f.Level, "loop": f.Loop, "policy": e.PolicyName}
	for k, v := range e.Details {
		details[k] = v
	}
	class := "sla.incident"
	if e.SubjectKind == escalation.SubjectKindApproval {
		class = "approval"
	}
	component, _ := e.Details["workflowID"].(string)
	group, _ := e.Details["environmentID"].(string)
	p := map[string]any{
		"summary":        summary,
		"source":         "sluice",
		"severity":       severity,
		"timestamp":      now.UTC().Format(time.RFC3339Nano),
		"class":          class,
		"custom_details": details,
	}
	if component != "" {
		p["component"] = component
	}
	if group != "" {
		p["group"] = group
	}
	return p
}
