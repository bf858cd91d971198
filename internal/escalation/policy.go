package escalation

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/escalationpolicy"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Limits of a policy.
const (
	MaxLevels        = 10
	MaxRepeat        = 10
	MaxTargets       = 10
	MaxDelay         = 7 * 24 * time.Hour
	maxNameLen       = 100
	maxDescriptionLn = 500
)

// Roles a target may name.
var roles = []string{viewer.RoleOwner, viewer.RoleAdmin, viewer.RoleEditor, viewer.RoleOperator, viewer.RoleViewer}

// Severities PagerDuty accepts.
var severities = []string{"critical", "error", "warning", "info"}

// PolicyInput is a policy as given to create or update (nil: unchanged).
type PolicyInput struct {
	Name        *string
	Description *string
	Levels      []spec.Level // nil: unchanged
	Repeat      *int
}

// checkPolicy validates in, reading the endpoints and credentials it names
// in the viewer's tenant (another tenant's ids read as unknown). It
// collects every problem, each at its field path under input.
func checkPolicy(ctx context.Context, c *ent.Client, in PolicyInput, creating bool) ([]spec.Level, error) {
	var problems []errs.Problem
	add := func(path, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if in.Name != nil && (*in.Name == "" || len(*in.Name) > maxNameLen) {
		add("input.name", "must be 1 to %d characters", maxNameLen)
	}
	if in.Description != nil && len(*in.Description) > maxDescriptionLn {
		add("input.description", "must be at most %d characters", maxDescriptionLn)
	}
	if in.Repeat != nil && (*in.Repeat < 0 || *in.Repeat > MaxRepeat) {
		add("input.repeat", "must be between 0 and %d", MaxRepeat)
	}
	var levels []spec.Level
	if in.Levels != nil || creating {
		switch {
		case len(in.Levels) == 0:
			add("input.levels", "must have at least one level")
		case len(in.Levels) > MaxLevels:
			add("input.levels", "must have at most %d levels", MaxLevels)
		}
		for i, l := range in.Levels {
			path := fmt.Sprintf("input.levels[%d]", i)
			d, err := time.ParseDuration(l.Delay)
			switch {
			case err != nil:
				add(path+".delay", "must be a Go duration such as \"5m\"")
			case d < 0:
				add(path+".delay", "must not be negative")
			case d > MaxDelay:
				add(path+".delay", "must be at most %s", MaxDelay)
			}
			if l.Condition == "" {
				l.Condition = spec.IfNotAcknowledged
			}
			if !l.Condition.Valid() {
				add(path+".condition", "must be IF_NOT_ACKNOWLEDGED or IF_NOT_RESOLVED")
			}
			if len(l.Targets) == 0 {
				add(path+".targets", "must have at least one target")
			}
			if len(l.Targets) > MaxTargets {
				add(path+".targets", "must have at most %d targets", MaxTargets)
			}
			for j, t := range l.Targets {
				tp := fmt.Sprintf("%s.targets[%d]", path, j)
				n := 0
				if t.WebhookEndpointID != nil {
					n++
					ok, err := c.WebhookEndpoint.Get(ctx, *t.WebhookEndpointID)
					if err != nil && !ent.IsNotFound(err) {
						return nil, err
					}
					if ok == nil {
						add(tp+".webhookEndpointID", "no webhook endpoint %q in this tenant", *t.WebhookEndpointID)
					}
				}
				if t.PagerDuty != nil {
					n++
					cred, err := c.Credential.Get(ctx, t.PagerDuty.CredentialID)
					if err != nil && !ent.IsNotFound(err) {
						return nil, err
					}
					switch {
					case cred == nil:
						add(tp+".pagerDuty.credentialID", "no credential %q in this tenant", t.PagerDuty.CredentialID)
					case cred.Type != credential.TypePagerduty:
						add(tp+".pagerDuty.credentialID", "credential %s is of type %s; a pagerduty credential is needed", cred.Name, cred.Type)
					}
					if sv := t.PagerDuty.Severity; sv != nil && !slices.Contains(severities, *sv) {
						add(tp+".pagerDuty.severity", "must be one of critical, error, warning, info")
					}
				}
				if t.Role != nil {
					n++
					if !slices.Contains(roles, *t.Role) {
						add(tp+".role", "unknown role %q (owner, admin, editor, operator, viewer)", *t.Role)
					}
				}
				if n != 1 {
					add(tp, "must set exactly one of webhookEndpointID, pagerDuty, role")
				}
			}
			levels = append(levels, l)
		}
	}
	if len(problems) > 0 {
		return nil, errs.InvalidAll("invalid escalation policy", problems)
	}
	return levels, nil
}

// CreatePolicy stores a new escalation policy. Admins only.
func (s *Service) CreatePolicy(ctx context.Context, in PolicyInput) (*ent.EscalationPolicy, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if in.Name == nil {
		empty := ""
		in.Name = &empty
	}
	levels, err := checkPolicy(ctx, c, in, true)
	if err != nil {
		return nil, err
	}
	cr := c.EscalationPolicy.Create().SetName(*in.Name).SetLevels(levels).SetCreatedBy(v.Subject)
	if in.Description != nil {
		cr.SetDescription(*in.Description)
	}
	if in.Repeat != nil {
		cr.SetRepeat(*in.Repeat)
	}
	p, err := cr.Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "escalation policy "+*in.Name)
	}
	return p, audit.Record(ctx, c, "escalation_policy.create", "EscalationPolicy", p.ID, map[string]any{"name": p.Name, "levels": len(levels), "repeat": p.Repeat})
}

// UpdatePolicy changes a policy. Running escalations keep the snapshot
// they started with.
func (s *Service) UpdatePolicy(ctx context.Context, id string, in PolicyInput) (*ent.EscalationPolicy, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	p, err := c.EscalationPolicy.Query().Where(escalationpolicy.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("escalation policy", id)
	}
	if err != nil {
		return nil, err
	}
	levels, err := checkPolicy(ctx, c, in, false)
	if err != nil {
		return nil, err
	}
	u := p.Update()
	meta := map[string]any{}
	if in.Name != nil {
		u.SetName(*in.Name)
		meta["name"] = *in.Name
	}
	if in.Description != nil {
		u.SetDescription(*in.Description)
	}
	if in.Levels != nil {
		u.SetLevels(levels)
		meta["levels"] = len(levels)
	}
	if in.Repeat != nil {
		u.SetRepeat(*in.Repeat)
		meta["repeat"] = *in.Repeat
	}
	name := p.Name
	if in.Name != nil {
		name = *in.Name
	}
	p, err = u.Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "escalation policy "+name)
	}
	return p, audit.Record(ctx, c, "escalation_policy.update", "EscalationPolicy", p.ID, meta)
}

// DeletePolicy removes a policy. Running escalations keep their snapshot;
// approval steps that name it start none from then on.
func (s *Service) DeletePolicy(ctx context.Context, id string) (string, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.EscalationPolicy.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("escalation policy", id)
	} else if err != nil {
		return "", err
	}
	return id, audit.Record(ctx, c, "escalation_policy.delete", "EscalationPolicy", id, nil)
}

// PolicyExists reports whether a policy with id exists in the tenant of
// c's transaction (the SLA policies check the ids they name).
func (s *Service) PolicyExists(ctx context.Context, c *ent.Client, id string) (bool, error) {
	return c.EscalationPolicy.Query().Where(escalationpolicy.ID(id)).Exist(ctx)
}
