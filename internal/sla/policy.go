package sla

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/slapolicy"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// PolicyInput is what createSLAPolicy takes.
type PolicyInput struct {
	WorkflowID    *string
	EnvironmentID *string
	Name          *string
	Objectives    slaspec.Objectives
}

// scopeKey identifies a policy's scope in the unique index (nulls
// included, which a plain unique index over two nullable columns would not).
func scopeKey(workflowID, environmentID *string) string {
	var w, e string
	if workflowID != nil {
		w = *workflowID
	}
	if environmentID != nil {
		e = *environmentID
	}
	if w == "" && e == "" {
		return ""
	}
	return w + "/" + e
}

// validate checks objectives (paths under input.objectives) and their
// escalation policies, which must be visible in the caller's tenant.
func (s *Service) validate(ctx context.Context, c *ent.Client, o slaspec.Objectives) error {
	var problems []errs.Problem
	for _, p := range o.Validate() {
		problems = append(problems, errs.Problem{Path: "input.objectives." + p.Path, Message: p.Message})
	}
	for _, name := range slaspec.Names {
		cm := o.Common(name)
		if cm == nil || cm.EscalationPolicyID == nil || *cm.EscalationPolicyID == "" {
			continue
		}
		path := "input.objectives." + name + ".escalationPolicyID"
		ok := false
		if s.o.Escalator != nil {
			var err error
			if ok, err = s.o.Escalator.PolicyExists(ctx, c, *cm.EscalationPolicyID); err != nil {
				return err
			}
		}
		if !ok {
			problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf("no escalation policy %q in this tenant", *cm.EscalationPolicyID)})
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("invalid SLA objectives: "+problems[0].Path+": "+problems[0].Message, problems)
	}
	return nil
}

// CreatePolicy creates a policy for a scope that has none (admins).
func (s *Service) CreatePolicy(ctx context.Context, in PolicyInput) (*ent.SLAPolicy, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if in.WorkflowID != nil {
		if _, err := c.Workflow.Get(ctx, *in.WorkflowID); ent.IsNotFound(err) {
			return nil, errs.Invalid("input.workflowID", "no workflow %q in this tenant", *in.WorkflowID)
		} else if err != nil {
			return nil, err
		}
	}
	if in.EnvironmentID != nil {
		if _, err := c.Environment.Get(ctx, *in.EnvironmentID); ent.IsNotFound(err) {
			return nil, errs.Invalid("input.environmentID", "no environment %q in this tenant", *in.EnvironmentID)
		} else if err != nil {
			return nil, err
		}
	}
	if in.Name != nil && len(*in.Name) > 200 {
		return nil, errs.Invalid("input.name", "must be at most 200 characters")
	}
	if err := s.validate(ctx, c, in.Objectives); err != nil {
		return nil, err
	}
	key := scopeKey(in.WorkflowID, in.EnvironmentID)
	if n, err := c.SLAPolicy.Query().Where(slapolicy.ScopeKey(key)).Count(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		return nil, errs.E(errs.Conflict, "this scope already has an SLA policy; update it instead")
	}
	p, err := c.SLAPolicy.Create().SetNillableWorkflowID(in.WorkflowID).SetNillableEnvironmentID(in.EnvironmentID).
		SetScopeKey(key).SetNillableName(in.Name).SetObjectives(in.Objectives).SetCreatedBy(v.Subject).Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "an SLA policy for this scope")
	}
	return p, audit.Record(ctx, c, "sla_policy.create", "SLAPolicy", p.ID, map[string]any{"scope": string(ScopeOf(p.WorkflowID, p.EnvironmentID)), "objectives": p.Objectives})
}

// UpdatePolicy replaces a policy's objectives (and name). Open incidents
// keep what they copied when they opened.
func (s *Service) UpdatePolicy(ctx context.Context, id string, name *string, o slaspec.Objectives) (*ent.SLAPolicy, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	p, err := c.SLAPolicy.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("SLA policy", id)
	} else if err != nil {
		return nil, err
	}
	if name != nil && len(*name) > 200 {
		return nil, errs.Invalid("input.name", "must be at most 200 characters")
	}
	if err := s.validate(ctx, c, o); err != nil {
		return nil, err
	}
	p, err = p.Update().SetNillableName(name).SetObjectives(o).Save(ctx)
	if err != nil {
		return nil, err
	}
	return p, audit.Record(ctx, c, "sla_policy.update", "SLAPolicy", p.ID, map[string]any{"objectives": o})
}

// DeletePolicy deletes a policy. Runs already started keep their
// deadlines; the sweep judges them by the policies in force when it looks.
func (s *Service) DeletePolicy(ctx context.Context, id string) (string, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	n, err := c.SLAPolicy.Delete().Where(slapolicy.ID(id)).Exec(ctx)
	if err != nil {
		return "", err
	}
	if n == 0 {
		return "", errs.NotFoundf("SLA policy", id)
	}
	return id, audit.Record(ctx, c, "sla_policy.delete", "SLAPolicy", id, nil)
}

// EffectiveFor returns the SLA in force for a workflow in an environment
// (every role).
func (s *Service) EffectiveFor(ctx context.Context, workflowID, environmentID string) (Effective, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor, viewer.RoleOperator, viewer.RoleViewer)
	if err != nil {
		return Effective{}, err
	}
	if _, err := c.Workflow.Get(ctx, workflowID); ent.IsNotFound(err) {
		return Effective{}, errs.Invalid("workflowID", "no workflow %q in this tenant", workflowID)
	} else if err != nil {
		return Effective{}, err
	}
	if !access.InScope(v, environmentID) {
		return Effective{}, errs.Invalid("environmentID", "no environment %q in this tenant", environmentID)
	}
	if _, err := c.Environment.Get(ctx, environmentID); ent.IsNotFound(err) {
		return Effective{}, errs.Invalid("environmentID", "no environment %q in this tenant", environmentID)
	} else if err != nil {
		return Effective{}, err
	}
	// Every policy of the tenant (an environment-scoped caller's filter
	// would hide those of no environment, which apply to it too).
	policies, err := c.SLAPolicy.Query().All(privacy.DecisionContext(ctx, privacy.Allow))
	if err != nil {
		return Effective{}, err
	}
	return Resolve(policies, workflowID, environmentID), nil
}
