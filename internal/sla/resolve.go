package sla

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/slaspec"
)

// Scope is where a policy applies, as GraphQL names it.
type Scope string

const (
	ScopeTenant              Scope = "TENANT"
	ScopeWorkflow            Scope = "WORKFLOW"
	ScopeEnvironment         Scope = "ENVIRONMENT"
	ScopeWorkflowEnvironment Scope = "WORKFLOW_ENVIRONMENT"
)

// ScopeOf returns a policy's scope from its workflow and environment.
func ScopeOf(workflowID, environmentID *string) Scope {
	switch {
	case workflowID != nil && environmentID != nil:
		return ScopeWorkflowEnvironment
	case workflowID != nil:
		return ScopeWorkflow
	case environmentID != nil:
		return ScopeEnvironment
	}
	return ScopeTenant
}

// rank orders scopes from least to most specific: a workflow is narrower
// than an environment (an environment holds many workflows).
func rank(p *ent.SLAPolicy) int {
	switch ScopeOf(p.WorkflowID, p.EnvironmentID) {
	case ScopeWorkflowEnvironment:
		return 3
	case ScopeWorkflow:
		return 2
	case ScopeEnvironment:
		return 1
	}
	return 0
}

// applies reports whether p covers runs of workflowID in environmentID.
func applies(p *ent.SLAPolicy, workflowID, environmentID string) bool {
	return (p.WorkflowID == nil || *p.WorkflowID == workflowID) && (p.EnvironmentID == nil || *p.EnvironmentID == environmentID)
}

// Effective is the SLA in force for a workflow in an environment: each
// objective from the most specific policy that sets it.
type Effective struct {
	Objectives slaspec.Objectives
	// Sources names the policy each objective comes from.
	Sources map[string]*ent.SLAPolicy
}

// Resolve computes the effective SLA of workflowID in environmentID from a
// tenant's policies.
func Resolve(policies []*ent.SLAPolicy, workflowID, environmentID string) Effective {
	eff := Effective{Sources: map[string]*ent.SLAPolicy{}}
	best := map[string]int{}
	for _, p := range policies {
		if !applies(p, workflowID, environmentID) {
			continue
		}
		r := rank(p)
		for _, name := range slaspec.Names {
			if !p.Objectives.Has(name) {
				continue
			}
			if cur, ok := best[name]; ok && cur >= r {
				continue
			}
			best[name] = r
			eff.Sources[name] = p
			copyObjective(&eff.Objectives, p.Objectives, name)
		}
	}
	return eff
}

func copyObjective(dst *slaspec.Objectives, src slaspec.Objectives, name string) {
	switch name {
	case slaspec.MaxDuration:
		dst.MaxDuration = src.MaxDuration
	case slaspec.MaxQueueDelay:
		dst.MaxQueueDelay = src.MaxQueueDelay
	case slaspec.MaxApprovalWait:
		dst.MaxApprovalWait = src.MaxApprovalWait
	case slaspec.MinSuccessRate:
		dst.MinSuccessRate = src.MinSuccessRate
	case slaspec.MaxCostPerRun:
		dst.MaxCostPerRun = src.MaxCostPerRun
	case slaspec.MaxCostPerWindow:
		dst.MaxCostPerWindow = src.MaxCostPerWindow
	case slaspec.CompleteBy:
		dst.CompleteBy = src.CompleteBy
	case slaspec.ReleaseRollback:
		dst.ReleaseRollback = src.ReleaseRollback
	}
}

// policySet is a tenant's policies as of its sla_version.
type policySet struct {
	version  int64
	policies []*ent.SLAPolicy
}

// tenantPolicies returns the tenant's policies. version is the tenant's
// sla_version read in c's transaction, or -1 when unknown (then read
// here). Every change to a policy bumps the version in its transaction
// (an Ent hook), so a set cached under the same version is the set this
// transaction would read: a tenant's policies are read once per change
// and process, and a tenant with none costs nothing more.
func (s *Service) tenantPolicies(ctx context.Context, c *ent.Client, tenantID string, version int64) ([]*ent.SLAPolicy, error) {
	if version < 0 {
		t, err := c.Tenant.Query().Where(tenant.ID(tenantID)).Select(tenant.FieldSLAVersion).Only(ctx)
		if err != nil {
			return nil, fmt.Errorf("read sla version: %w", err)
		}
		version = t.SLAVersion
	}
	if v, ok := s.policies.Load(tenantID); ok && v.(policySet).version == version {
		return v.(policySet).policies, nil
	}
	// All of the tenant's policies whoever asks: an environment-scoped
	// caller's privacy filter would hide those of no environment, and the
	// set is cached for every caller. Row-Level Security still confines
	// the read to the tenant.
	list, err := c.SLAPolicy.Query().All(privacy.DecisionContext(ctx, privacy.Allow))
	if err != nil {
		return nil, fmt.Errorf("read SLA policies: %w", err)
	}
	for _, p := range list {
		p.Edges = ent.SLAPolicyEdges{} // cached across transactions: no client use
	}
	s.policies.Store(tenantID, policySet{version: version, policies: list})
	return list, nil
}

// cachedPolicies returns the tenant's cached policies and their version,
// if any (the caller checks the version).
func (s *Service) cachedPolicies(tenantID string) ([]*ent.SLAPolicy, int64, bool) {
	v, ok := s.policies.Load(tenantID)
	if !ok {
		return nil, 0, false
	}
	return v.(policySet).policies, v.(policySet).version, true
}

// RunDeadlines implements runs.SLA: the deadlines of a new live run.
func (s *Service) RunDeadlines(ctx context.Context, c *ent.Client, tenantID string, version int64, workflowID, environmentID string, created time.Time) (runs.RunDeadlines, error) {
	var d runs.RunDeadlines
	policies, err := s.tenantPolicies(ctx, c, tenantID, version)
	if err != nil || len(policies) == 0 {
		return d, err
	}
	eff := Resolve(policies, workflowID, environmentID)
	if o := eff.Objectives.MaxDuration; o != nil {
		t := created.Add(slaspec.MustDuration(o.Duration))
		d.DeadlineAt = &t
	}
	if o := eff.Objectives.MaxQueueDelay; o != nil {
		t := created.Add(slaspec.MustDuration(o.Duration))
		d.QueueDeadlineAt = &t
	}
	if o := eff.Objectives.MaxCostPerRun; o != nil {
		v := o.MicroUSD
		d.MaxCostMicroUSD = &v
	}
	return d, nil
}

var _ runs.SLA = (*Service)(nil)
