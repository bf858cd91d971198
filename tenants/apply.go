package tenants

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/member"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/slapolicy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/envvars"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/limits"
	"github.com/sluicehq/sluice/internal/money"
	"github.com/sluicehq/sluice/internal/retention"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Applier applies manifests through the owner's connection: the tenants
// registry is visible to the owner only.
type Applier struct {
	Client *ent.Client // connected as DATABASE_URL (owner)
	Keys   *secrets.KeyRing
	Out    io.Writer
}

// registryContext reads the tenants registry across tenants; only the owner
// connection can, and only tenant provisioning does.
func registryContext(ctx context.Context) context.Context {
	return privacy.DecisionContext(ctx, privacy.Allow)
}

// Lookup returns the tenant with slug, or a not found error.
func (a *Applier) Lookup(ctx context.Context, slug string) (*ent.Tenant, error) {
	t, err := a.Client.Tenant.Query().Where(tenant.Slug(slug)).Only(registryContext(ctx))
	if ent.IsNotFound(err) {
		return nil, fmt.Errorf("tenant %q not found", slug)
	}
	return t, err
}

// List returns every tenant.
func (a *Applier) List(ctx context.Context) ([]*ent.Tenant, error) {
	return a.Client.Tenant.Query().Order(ent.Asc(tenant.FieldSlug)).All(registryContext(ctx))
}

// Apply creates or updates the tenant a manifest declares. It is idempotent:
// applying the same manifest twice changes nothing the second time. It never
// deletes environments or members missing from the manifest; it reports them.
// Everything happens in one transaction and is reported only once it commits,
// so a manifest that fails halfway (an environment changing kind) changes
// nothing.
func (a *Applier) Apply(ctx context.Context, m *Manifest) (*ent.Tenant, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	existing, err := a.Client.Tenant.Query().Where(tenant.Slug(m.Slug)).Only(registryContext(ctx))
	switch {
	case ent.IsNotFound(err):
		existing = nil
	case err != nil:
		return nil, err
	}
	id := ids.New(ids.Tenant)
	if existing != nil {
		id = existing.ID
	}
	var out bytes.Buffer
	var t *ent.Tenant
	err = store.InTenant(viewer.SystemContext(ctx, id), a.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		var err error
		if existing == nil {
			wrapped, keyID, err := a.Keys.NewDataKey(id)
			if err != nil {
				return err
			}
			t, err = c.Tenant.Create().SetID(id).SetSlug(m.Slug).SetName(m.Name).
				SetDataKey(wrapped).SetMasterKeyID(keyID).
				SetRetentionDays(m.RetentionDays).
				SetNillableMonthlyBudgetMicroUsd(budgetMicro(m.Budget)).
				SetSLADefaults(slaMap(m.SLA)).
				SetDispatchWeight(m.Plan.Weight).SetNillableMaxConcurrentSteps(stepCap(m.Plan)).
				SetNillableMaxConcurrentRuns(runCap(m.Plan)).
				Save(ctx)
			if err != nil {
				return fmt.Errorf("create tenant: %w", err)
			}
			fmt.Fprintf(&out, "created tenant %s (%s)\n", t.Slug, t.ID)
		} else {
			u := c.Tenant.UpdateOneID(id).SetName(m.Name).SetRetentionDays(m.RetentionDays).
				SetNillableMonthlyBudgetMicroUsd(budgetMicro(m.Budget)).
				SetSLADefaults(slaMap(m.SLA)).
				SetDispatchWeight(m.Plan.Weight)
			if n := stepCap(m.Plan); n != nil {
				u.SetMaxConcurrentSteps(*n)
			} else {
				u.ClearMaxConcurrentSteps()
			}
			if n := runCap(m.Plan); n != nil {
				u.SetMaxConcurrentRuns(*n)
			} else {
				u.ClearMaxConcurrentRuns()
			}
			t, err = u.Save(ctx)
			if err != nil {
				return fmt.Errorf("update tenant: %w", err)
			}
			fmt.Fprintf(&out, "tenant %s (%s) exists\n", t.Slug, t.ID)
		}
		if err := applyEnvironments(ctx, c, m, &out); err != nil {
			return err
		}
		if err := applyVariables(ctx, c, m, &out); err != nil {
			return err
		}
		if err := applyMembers(ctx, c, m, &out); err != nil {
			return err
		}
		if err := applyRetention(ctx, c, m, &out); err != nil {
			return err
		}
		if n, err := limits.Apply(ctx, c, id, "manifest:"+m.Slug, m.Limits); err != nil {
			return err
		} else if n > 0 {
			fmt.Fprintf(&out, "  set concurrency limits: %d created or changed\n", n)
		}
		// The sla section is the tenant default SLA policy (internal/sla).
		return applySLA(ctx, c, m.SLA)
	})
	if err != nil {
		return nil, err
	}
	if a.Out != nil {
		_, _ = a.Out.Write(out.Bytes())
	}
	return t.Unwrap(), nil
}

func applyEnvironments(ctx context.Context, c *ent.Client, m *Manifest, out io.Writer) error {
	existing, err := c.Environment.Query().All(ctx)
	if err != nil {
		return err
	}
	byName := map[string]*ent.Environment{}
	for _, e := range existing {
		byName[e.Name] = e
	}
	for _, spec := range m.Environments {
		if e, ok := byName[spec.Name]; ok {
			if string(e.Kind) != spec.Kind {
				return fmt.Errorf("environment %q exists with kind %s; the manifest says %s (kinds cannot change)", spec.Name, e.Kind, spec.Kind)
			}
			delete(byName, spec.Name)
			continue
		}
		e, err := c.Environment.Create().SetName(spec.Name).SetKind(environment.Kind(spec.Kind)).Save(ctx)
		if err != nil {
			return fmt.Errorf("create environment %s: %w", spec.Name, err)
		}
		fmt.Fprintf(out, "  created environment %s (%s)\n", e.Name, e.ID)
	}
	for name := range byName {
		fmt.Fprintf(out, "  environment %s is not in the manifest; left in place\n", name)
	}
	return nil
}

// applyVariables gives each environment the variables its spec names, as
// one new variables version per environment that changes (through
// internal/control, which checks them against the deployed versions'
// needs and audits the change); an environment already holding them is
// left alone.
func applyVariables(ctx context.Context, c *ent.Client, m *Manifest, out io.Writer) error {
	ctl := control.New(control.Options{})
	for i, spec := range m.Environments {
		if len(spec.Vars) == 0 {
			continue
		}
		env, err := c.Environment.Query().Where(environment.Name(spec.Name)).Only(ctx)
		if err != nil {
			return err
		}
		current, err := control.EnvironmentVariables(ctx, c, env)
		if err != nil {
			return err
		}
		have := map[string]envvars.Variable{}
		for _, v := range current {
			have[v.Name] = v
		}
		var set []envvars.Variable
		var names []string
		for _, name := range slices.Sorted(maps.Keys(spec.Vars)) {
			want, msg := spec.Vars[name].variable(name)
			if msg != "" {
				return fmt.Errorf("environments[%d].vars.%s: %s", i, name, msg)
			}
			if cur, ok := have[name]; ok && cur.Type == want.Type && sameJSON(cur.Value, want.Value) {
				continue
			}
			set = append(set, want)
			names = append(names, name)
		}
		if len(set) == 0 {
			continue
		}
		path := func(k int) string { return fmt.Sprintf("environments[%d].vars.%s", i, set[k].Name) }
		env, err = ctl.SetEnvironmentVariables(ctx, env.ID, control.VariableChange{Set: set, SetPath: path})
		if err != nil {
			return fmt.Errorf("environment %s: %w", spec.Name, err)
		}
		fmt.Fprintf(out, "  set variables of %s: %s (version %d)\n", spec.Name, strings.Join(names, ", "), env.VarsVersion)
	}
	return nil
}

func sameJSON(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// applyMembers adds the manifest's members and sets their roles through
// internal/control, as addMember and updateMember do: each change is
// audited, and one that would leave the tenant without an owner is refused.
// Members that become owners are applied first, so a manifest may hand
// ownership from one member to another.
func applyMembers(ctx context.Context, c *ent.Client, m *Manifest, out io.Writer) error {
	ctl := control.New(control.Options{})
	specs := slices.Clone(m.Members)
	slices.SortStableFunc(specs, func(a, b MemberSpec) int {
		ao, bo := slices.Contains(a.Roles, viewer.RoleOwner), slices.Contains(b.Roles, viewer.RoleOwner)
		switch {
		case ao && !bo:
			return -1
		case bo && !ao:
			return 1
		}
		return 0
	})
	for _, spec := range specs {
		roles := slices.Compact(slices.Sorted(slices.Values(spec.Roles)))
		cur, err := c.Member.Query().Where(member.Subject(spec.Subject)).Only(ctx)
		switch {
		case ent.IsNotFound(err):
			if _, err := ctl.AddMember(ctx, spec.Subject, roles); err != nil {
				return fmt.Errorf("add member %s: %w", spec.Subject, err)
			}
			fmt.Fprintf(out, "  added member %s %v\n", spec.Subject, roles)
		case err != nil:
			return err
		case !slices.Equal(cur.Roles, roles):
			if _, err := ctl.UpdateMember(ctx, cur.ID, roles); err != nil {
				return fmt.Errorf("member %s: %w", spec.Subject, err)
			}
			fmt.Fprintf(out, "  member %s roles %v -> %v\n", spec.Subject, cur.Roles, roles)
		}
	}
	return nil
}

func budgetMicro(b BudgetSpec) *int64 {
	if b.MonthlyUSD <= 0 {
		return nil
	}
	v := money.FromUSD(b.MonthlyUSD)
	return &v
}

func slaMap(s SLASpec) map[string]any {
	out := map[string]any{}
	if s.RunDuration != "" {
		out["runDuration"] = s.RunDuration
	}
	if s.ApprovalResponse != "" {
		out["approvalResponse"] = s.ApprovalResponse
	}
	if s.ReleaseRollback != "" {
		out["releaseRollback"] = s.ReleaseRollback
	}
	if len(s.EscalateTo) > 0 {
		out["escalateTo"] = s.EscalateTo
	}
	return out
}

// applySLA writes the tenant default policy from a tenant
// manifest's sla section: runDuration is maxDuration (ERROR) and
// approvalResponse is maxApprovalWait (WARNING), releaseRollback the
// severity of the releaseRollback objective. The policy's other
// objectives are kept; an empty field leaves its objective as it is. c is
// the tenant's transaction (system viewer). Policies live in internal/sla;
// this writes the row as that package reads it.
func applySLA(ctx context.Context, c *ent.Client, spec SLASpec) error {
	runDuration, approvalResponse, rollback := spec.RunDuration, spec.ApprovalResponse, spec.ReleaseRollback
	if runDuration == "" && approvalResponse == "" && rollback == "" {
		return nil
	}
	p, err := c.SLAPolicy.Query().Where(slapolicy.ScopeKey("")).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return err
	}
	var o slaspec.Objectives
	if p != nil {
		o = p.Objectives
	}
	if runDuration != "" {
		o.MaxDuration = &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Error}, Duration: runDuration}
		if p != nil && p.Objectives.MaxDuration != nil {
			o.MaxDuration.Common = p.Objectives.MaxDuration.Common
		}
	}
	if approvalResponse != "" {
		o.MaxApprovalWait = &slaspec.Duration{Common: slaspec.Common{Severity: slaspec.Warning}, Duration: approvalResponse}
		if p != nil && p.Objectives.MaxApprovalWait != nil {
			o.MaxApprovalWait.Common = p.Objectives.MaxApprovalWait.Common
		}
	}
	if rollback != "" {
		cm := slaspec.Common{Severity: slaspec.Severity(strings.ToUpper(rollback))}
		if p != nil && p.Objectives.ReleaseRollback != nil {
			cm.EscalationPolicyID = p.Objectives.ReleaseRollback.EscalationPolicyID
		}
		o.ReleaseRollback = &cm
	}
	if problems := o.Validate(); len(problems) > 0 {
		return fmt.Errorf("sla: %s: %s", problems[0].Path, problems[0].Message)
	}
	if p == nil {
		_, err = c.SLAPolicy.Create().SetScopeKey("").SetName("tenant manifest").SetObjectives(o).SetCreatedBy("tenant-manifest").Save(ctx)
		return err
	}
	if o == p.Objectives {
		return nil
	}
	return p.Update().SetObjectives(o).Exec(ctx)
}

// stepCap is the tenant's max_concurrent_steps: nil for no cap.
func stepCap(p PlanSpec) *int {
	if p.MaxConcurrentSteps <= 0 {
		return nil
	}
	n := p.MaxConcurrentSteps
	return &n
}

// runCap is the tenant's max_concurrent_runs: nil for no cap.
func runCap(p PlanSpec) *int {
	if p.MaxConcurrentRuns <= 0 {
		return nil
	}
	n := p.MaxConcurrentRuns
	return &n
}

// applyRetention writes the manifest's retention block as the tenant's
// policy and its environments' overrides (internal/retention, audited).
func applyRetention(ctx context.Context, c *ent.Client, m *Manifest, out io.Writer) error {
	if m.Retention == nil {
		return nil
	}
	days := func(d RetentionDaysSpec) retention.Days {
		return retention.Days{Payload: d.PayloadDays, Run: d.RunDays, Audit: d.AuditDays, WebhookDelivery: d.WebhookDeliveryDays}
	}
	levels := map[string]retention.Days{"": days(m.Retention.RetentionDaysSpec)}
	for name, d := range m.Retention.Environments {
		env, err := c.Environment.Query().Where(environment.Name(name)).Only(ctx)
		if err != nil {
			return fmt.Errorf("retention.environments.%s: %w", name, err)
		}
		levels[env.ID] = days(d)
	}
	n, err := retention.Apply(ctx, c, levels)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	if n > 0 {
		fmt.Fprintf(out, "  set retention policy: %d levels updated\n", n)
	}
	return nil
}
