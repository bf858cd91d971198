// Package retention owns how long a tenant keeps its data and the purge
// that enforces it: retention policies (one for the tenant, overrides per
// environment and per workflow; the retention_policies table under RLS),
// legal holds on runs (holdRun, releaseHold), what a run shows about being
// kept (retainedUntil, retentionReason), the preview of a policy change,
// and the purge job that runs in workers (one at a time, store.RunSingleton)
// with its record (retention_passes) and metrics.
//
// Purging a run's payloads keeps the run row as a tombstone (status,
// timings, version, cost, error class, who and when purged), so reports
// and cost totals stay right; runs are deleted, as tombstones, after
// runDays. Both count from a run's finish. Open runs, runs under a legal
// hold, runs in an open incident and runs in an evaluation's dataset are
// never purged.
package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/retentionpolicy"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Limits of the days a policy may name.
const (
	MaxDays = 3650
	// DefaultAuditDays and DefaultWebhookDeliveryDays apply when no
	// level sets them; runDays defaults to the tenant's retentionDays
	// (manifest) and payloadDays to runDays.
	DefaultAuditDays           = 400
	DefaultWebhookDeliveryDays = 30
)

// Days is a policy's values; nil inherits from the level above.
type Days struct {
	Payload, Run, Audit, WebhookDelivery *int
}

// Effective is a policy with every value resolved.
type Effective struct {
	Payload, Run, Audit, WebhookDelivery int
}

// over fills e's values from d where d sets them.
func (e Effective) over(d Days) Effective {
	if d.Run != nil {
		e.Run = *d.Run
	}
	if d.Payload != nil {
		e.Payload = *d.Payload
	}
	if d.Audit != nil {
		e.Audit = *d.Audit
	}
	if d.WebhookDelivery != nil {
		e.WebhookDelivery = *d.WebhookDelivery
	}
	return e
}

// PurgeDays is how many days a run's payloads are kept at most: payloadDays,
// or runDays when that is shorter (the run goes, payloads with it).
func (e Effective) PurgeDays() int { return min(e.Payload, e.Run) }

func daysOf(p *ent.RetentionPolicy) Days {
	if p == nil {
		return Days{}
	}
	return Days{Payload: p.PayloadDays, Run: p.RunDays, Audit: p.AuditDays, WebhookDelivery: p.WebhookDeliveryDays}
}

// Scope names the level of a policy.
type Scope = retentionpolicy.Scope

// Scopes.
const (
	ScopeTenant      = retentionpolicy.ScopeTenant
	ScopeEnvironment = retentionpolicy.ScopeEnvironment
	ScopeWorkflow    = retentionpolicy.ScopeWorkflow
)

// Input is what setRetentionPolicy and previewRetention take: the values of
// one level (nil inherits).
type Input struct {
	Scope    Scope
	TargetID string
	Days
}

// Policy is one level's policy as the API shows it: what it sets and what
// applies there.
type Policy struct {
	Scope     Scope
	TargetID  string
	Set       Days
	Effective Effective
	UpdatedBy *string
	UpdatedAt *time.Time
}

// tenantDefaults is the bottom level: the tenant's retentionDays as runDays
// (and payloadDays), the documented defaults for the rest.
func tenantDefaults(ctx context.Context, c *ent.Client, tenantID string) (Effective, error) {
	t, err := c.Tenant.Get(ctx, tenantID)
	if err != nil {
		return Effective{}, fmt.Errorf("read tenant: %w", err)
	}
	return Effective{Payload: t.RetentionDays, Run: t.RetentionDays, Audit: DefaultAuditDays, WebhookDelivery: DefaultWebhookDeliveryDays}, nil
}

// levels reads a tenant's policy rows, keyed by scope and target.
func levels(ctx context.Context, c *ent.Client) (map[string]*ent.RetentionPolicy, error) {
	list, err := c.RetentionPolicy.Query().All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read retention policies: %w", err)
	}
	out := make(map[string]*ent.RetentionPolicy, len(list))
	for _, p := range list {
		out[key(p.Scope, p.TargetID)] = p
	}
	return out, nil
}

func key(s Scope, target string) string { return string(s) + "/" + target }

// Resolver resolves the effective policy of any level of one tenant from
// one read of its rows.
type Resolver struct {
	base Effective
	rows map[string]*ent.RetentionPolicy
}

// NewResolver reads the tenant's policies in c's transaction.
func NewResolver(ctx context.Context, c *ent.Client, tenantID string) (*Resolver, error) {
	base, err := tenantDefaults(ctx, c, tenantID)
	if err != nil {
		return nil, err
	}
	rows, err := levels(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Resolver{base: base, rows: rows}, nil
}

// Tenant is the tenant level's effective policy.
func (r *Resolver) Tenant() Effective {
	return r.base.over(daysOf(r.rows[key(ScopeTenant, "")]))
}

// Shortest is the shortest payload period (a level's payloadDays or
// runDays, whichever is shorter) and the shortest runDays that any level
// of the tenant gives its runs: no run finished within the last payload
// days is due for a payload purge, and no tombstone finished within the
// last run days is due for deletion.
func (r *Resolver) Shortest() (payload, run int) {
	t := r.Tenant()
	payload, run = min(t.Payload, t.Run), t.Run
	for _, p := range r.rows {
		if p.Scope == ScopeTenant {
			continue
		}
		if p.RunDays != nil {
			payload, run = min(payload, *p.RunDays), min(run, *p.RunDays)
		}
		if p.PayloadDays != nil {
			payload = min(payload, *p.PayloadDays)
		}
	}
	return payload, run
}

// ForRun is the effective policy of a run of workflowID in environmentID:
// the workflow's override over the environment's over the tenant's.
func (r *Resolver) ForRun(workflowID, environmentID string) Effective {
	e := r.Tenant().over(daysOf(r.rows[key(ScopeEnvironment, environmentID)]))
	return e.over(daysOf(r.rows[key(ScopeWorkflow, workflowID)]))
}

// At is the effective policy at a level (an environment's or a workflow's
// override applies over the tenant's).
func (r *Resolver) At(s Scope, target string) Effective {
	switch s {
	case ScopeEnvironment:
		return r.ForRun("", target)
	case ScopeWorkflow:
		return r.Tenant().over(daysOf(r.rows[key(ScopeWorkflow, target)]))
	}
	return r.Tenant()
}

// Get is the policy of one level as the caller (an admin) may see it.
func (s *Service) Get(ctx context.Context, scope Scope, targetID string) (*Policy, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if err := checkTarget(ctx, c, scope, targetID); err != nil {
		return nil, err
	}
	return policyAt(ctx, c, v.TenantID, scope, targetID)
}

// List is the tenant's policy and every override, tenant first.
func (s *Service) List(ctx context.Context) ([]*Policy, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	r, err := NewResolver(ctx, c, v.TenantID)
	if err != nil {
		return nil, err
	}
	out := []*Policy{view(r, ScopeTenant, "", r.rows[key(ScopeTenant, "")])}
	list, err := c.RetentionPolicy.Query().Where(retentionpolicy.ScopeNEQ(ScopeTenant)).
		Order(ent.Asc(retentionpolicy.FieldScope), ent.Asc(retentionpolicy.FieldTargetID)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range list {
		out = append(out, view(r, p.Scope, p.TargetID, p))
	}
	return out, nil
}

func policyAt(ctx context.Context, c *ent.Client, tenantID string, scope Scope, targetID string) (*Policy, error) {
	r, err := NewResolver(ctx, c, tenantID)
	if err != nil {
		return nil, err
	}
	return view(r, scope, targetID, r.rows[key(scope, targetID)]), nil
}

func view(r *Resolver, scope Scope, targetID string, row *ent.RetentionPolicy) *Policy {
	p := &Policy{Scope: scope, TargetID: targetID, Set: daysOf(row), Effective: r.At(scope, targetID)}
	if row != nil {
		p.UpdatedBy, p.UpdatedAt = &row.UpdatedBy, &row.UpdatedAt
	}
	return p
}

// validate checks an input's values and names every problem with its path
// under prefix ("input" or "policy").
func validate(ctx context.Context, c *ent.Client, prefix string, in Input) error {
	if err := retentionpolicy.ScopeValidator(in.Scope); err != nil {
		return errs.Invalid(prefix+".scope", "must be TENANT, ENVIRONMENT or WORKFLOW")
	}
	var problems []errs.Problem
	bad := func(field, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: prefix + "." + field, Message: fmt.Sprintf(format, args...)})
	}
	check := func(field string, v *int, least int) {
		if v != nil && (*v < least || *v > MaxDays) {
			bad(field, "must be between %d and %d days", least, MaxDays)
		}
	}
	check("payloadDays", in.Payload, 0)
	check("runDays", in.Run, 1)
	check("auditDays", in.Audit, 1)
	check("webhookDeliveryDays", in.WebhookDelivery, 0)
	if in.Scope != ScopeTenant {
		if in.Audit != nil {
			bad("auditDays", "is set for the whole tenant only (scope TENANT): audit entries belong to no environment or workflow")
		}
		if in.WebhookDelivery != nil {
			bad("webhookDeliveryDays", "is set for the whole tenant only (scope TENANT)")
		}
	}
	if in.Scope == ScopeTenant && in.TargetID != "" {
		bad("targetID", "must be empty for scope TENANT")
	}
	if in.Scope != ScopeTenant && in.TargetID == "" {
		bad("targetID", "is required for scope %s", in.Scope)
	}
	if in.Payload != nil && in.Run != nil && *in.Payload > *in.Run {
		bad("payloadDays", "must not exceed runDays (%d): a run's payloads go with it", *in.Run)
	}
	if len(problems) > 0 {
		return errs.InvalidAll(problems[0].Path+": "+problems[0].Message, problems)
	}
	if in.Scope != ScopeTenant {
		if err := checkTarget(ctx, c, in.Scope, in.TargetID); err != nil {
			if e, ok := errs.As(err); ok && e.Code == errs.NotFound {
				e.Problems = []errs.Problem{{Path: prefix + ".targetID", Message: "not found"}}
			}
			return err
		}
	}
	return nil
}

// checkTarget answers NOT_FOUND for an environment or workflow the caller
// cannot see (another tenant's reads as missing).
func checkTarget(ctx context.Context, c *ent.Client, scope Scope, targetID string) error {
	switch scope {
	case ScopeEnvironment:
		_, err := control.EnvironmentByID(ctx, c, targetID, "targetID")
		return err
	case ScopeWorkflow:
		if _, err := c.Workflow.Get(ctx, targetID); ent.IsNotFound(err) {
			return errs.NotFoundf("workflow", targetID)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// Set replaces one level's values (nil inherits; a level with nothing set
// is removed) and records the change in the audit log.
func (s *Service) Set(ctx context.Context, in Input) (*Policy, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if err := validate(ctx, c, "input", in); err != nil {
		return nil, err
	}
	before, err := policyAt(ctx, c, v.TenantID, in.Scope, in.TargetID)
	if err != nil {
		return nil, err
	}
	if err := upsert(ctx, c, v.Subject, in); err != nil {
		return nil, err
	}
	after, err := policyAt(ctx, c, v.TenantID, in.Scope, in.TargetID)
	if err != nil {
		return nil, err
	}
	if after.Effective.Payload > after.Effective.Run {
		return nil, errs.Invalid("input.payloadDays", "must not exceed runDays (%d at this level): a run's payloads go with it", after.Effective.Run)
	}
	target := in.TargetID
	if target == "" {
		target = v.TenantID
	}
	return after, audit.Record(ctx, c, "retention.set_policy", "RetentionPolicy", target, map[string]any{
		"scope": string(in.Scope), "targetID": in.TargetID, "before": describe(before.Set), "after": describe(after.Set),
	})
}

func describe(d Days) map[string]any {
	m := map[string]any{}
	put := func(k string, v *int) {
		if v != nil {
			m[k] = *v
		} else {
			m[k] = nil
		}
	}
	put("payloadDays", d.Payload)
	put("runDays", d.Run)
	put("auditDays", d.Audit)
	put("webhookDeliveryDays", d.WebhookDelivery)
	return m
}

// upsert writes one level's row in c's transaction (or removes it when it
// sets nothing), serialised per level.
func upsert(ctx context.Context, c *ent.Client, by string, in Input) error {
	cur, err := c.RetentionPolicy.Query().
		Where(retentionpolicy.ScopeEQ(in.Scope), retentionpolicy.TargetID(in.TargetID)).ForUpdate().Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return err
	}
	empty := in.Payload == nil && in.Run == nil && in.Audit == nil && in.WebhookDelivery == nil
	switch {
	case cur == nil && empty:
		return nil
	case cur == nil:
		_, err = c.RetentionPolicy.Create().SetScope(in.Scope).SetTargetID(in.TargetID).
			SetNillablePayloadDays(in.Payload).SetNillableRunDays(in.Run).SetNillableAuditDays(in.Audit).
			SetNillableWebhookDeliveryDays(in.WebhookDelivery).SetUpdatedBy(by).Save(ctx)
	case empty:
		err = c.RetentionPolicy.DeleteOne(cur).Exec(ctx)
	default:
		u := cur.Update().SetUpdatedBy(by).ClearPayloadDays().ClearRunDays().ClearAuditDays().ClearWebhookDeliveryDays().
			SetNillablePayloadDays(in.Payload).SetNillableRunDays(in.Run).SetNillableAuditDays(in.Audit).
			SetNillableWebhookDeliveryDays(in.WebhookDelivery)
		_, err = u.Save(ctx)
	}
	if err != nil {
		return fmt.Errorf("save retention policy: %w", err)
	}
	return nil
}

// Apply writes a tenant's policy levels as a manifest names them, as the
// system (tenant apply): levels is keyed by environment id ("" for the
// tenant). A level that already holds its values is left alone; each
// changed level is audited. It returns how many changed.
func Apply(ctx context.Context, c *ent.Client, levels map[string]Days) (int, error) {
	changed := 0
	for target, d := range levels {
		in := Input{Scope: ScopeTenant, Days: d}
		if target != "" {
			in.Scope, in.TargetID = ScopeEnvironment, target
		}
		if err := validate(ctx, c, "retention", in); err != nil {
			return changed, err
		}
		cur, err := c.RetentionPolicy.Query().
			Where(retentionpolicy.ScopeEQ(in.Scope), retentionpolicy.TargetID(in.TargetID)).Only(ctx)
		if err != nil && !ent.IsNotFound(err) {
			return changed, err
		}
		if sameDays(daysOf(cur), d) {
			continue
		}
		if err := upsert(ctx, c, "manifest", in); err != nil {
			return changed, err
		}
		t := target
		if t == "" {
			t = viewer.FromContext(ctx).TenantID
		}
		if err := audit.Record(ctx, c, "retention.set_policy", "RetentionPolicy", t, map[string]any{
			"scope": string(in.Scope), "targetID": in.TargetID, "before": describe(daysOf(cur)), "after": describe(d), "source": "manifest"}); err != nil {
			return changed, err
		}
		changed++
	}
	return changed, nil
}

func sameDays(a, b Days) bool {
	eq := func(x, y *int) bool { return (x == nil) == (y == nil) && (x == nil || *x == *y) }
	return eq(a.Payload, b.Payload) && eq(a.Run, b.Run) && eq(a.Audit, b.Audit) && eq(a.WebhookDelivery, b.WebhookDelivery)
}
