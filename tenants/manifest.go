// Package tenants provisions tenants from declarative YAML manifests: a
// default template (default.yaml) overlaid by a manifest, validated, then
// applied idempotently with `sluice tenant apply -f FILE`.
package tenants

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/sluicehq/sluice/internal/envvars"
	"github.com/sluicehq/sluice/internal/limits"
	"github.com/sluicehq/sluice/internal/slaspec"
	"github.com/sluicehq/sluice/internal/viewer"
)

//go:embed default.yaml
var defaultTemplate []byte

// Manifest declares a tenant.
type Manifest struct {
	Slug          string            `yaml:"slug"`
	Name          string            `yaml:"name"`
	Environments  []EnvironmentSpec `yaml:"environments"`
	Roles         []string          `yaml:"roles"`
	Members       []MemberSpec      `yaml:"members"`
	RetentionDays int               `yaml:"retentionDays"`
	Retention     *RetentionSpec    `yaml:"retention"`
	Budget        BudgetSpec        `yaml:"budget"`
	SLA           SLASpec           `yaml:"sla"`
	Plan          PlanSpec          `yaml:"plan"`
	// Limits are named concurrency limits (internal/limits), name to
	// limit: set as given; limits not named here are left as they are.
	Limits map[string]int `yaml:"limits"`
}

// PlanSpec is the tenant's place in fair dispatch: its weight (its share
// of the step queue is SLUICE_DISPATCH_SHARE times it), the most steps it
// may run at once and the most runs it may have unfinished at once (0: no
// cap; internal/runs/runcap.go).
type PlanSpec struct {
	Weight             int `yaml:"weight"`
	MaxConcurrentSteps int `yaml:"maxConcurrentSteps"`
	MaxConcurrentRuns  int `yaml:"maxConcurrentRuns"`
}

// EnvironmentSpec declares one environment.
type EnvironmentSpec struct {
	Name string `yaml:"name"`
	Kind string `yaml:"kind"`
	// Vars are variables the environment must hold with these values
	// (env.vars.<name>); variables set otherwise and not named here are
	// left as they are.
	Vars map[string]VarSpec `yaml:"vars"`
}

// VarSpec is one environment variable: its type (string, number,
// integer, boolean, json) and value.
type VarSpec struct {
	Type  string `yaml:"type"`
	Value any    `yaml:"value"`
}

// RetentionDaysSpec is one level of retention (internal/retention); an
// omitted value inherits.
type RetentionDaysSpec struct {
	PayloadDays         *int `yaml:"payloadDays"`
	RunDays             *int `yaml:"runDays"`
	AuditDays           *int `yaml:"auditDays"`
	WebhookDeliveryDays *int `yaml:"webhookDeliveryDays"`
}

// RetentionSpec is the tenant's retention policy and its overrides per
// environment (by name). Applying a manifest with it replaces those
// levels; without it, policies set through the API are left alone.
// retentionDays is the tenant's runDays when runDays is omitted.
type RetentionSpec struct {
	RetentionDaysSpec `yaml:",inline"`
	Environments      map[string]RetentionDaysSpec `yaml:"environments"`
}

// MemberSpec grants roles to a subject.
type MemberSpec struct {
	Subject string   `yaml:"subject"`
	Roles   []string `yaml:"roles"`
}

// BudgetSpec is the tenant's monthly spending cap on model calls.
type BudgetSpec struct {
	MonthlyUSD float64 `yaml:"monthlyUSD"`
}

// SLASpec holds the tenant's SLA defaults; workflows may override them.
type SLASpec struct {
	RunDuration      string `yaml:"runDuration"`
	ApprovalResponse string `yaml:"approvalResponse"`
	// ReleaseRollback is the severity (critical, error, warning, info) of
	// the incident a release's automatic rollback opens.
	ReleaseRollback string   `yaml:"releaseRollback"`
	EscalateTo      []string `yaml:"escalateTo"`
}

var (
	slugRE = regexp.MustCompile(`^[a-z][a-z0-9-]{1,62}$`)
	envRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
)

// Parse reads a manifest over the default template and validates it.
func Parse(data []byte) (*Manifest, error) {
	m, err := Default()
	if err != nil {
		return nil, err
	}
	// Lists replace the template's lists rather than merging into them.
	var overlay Manifest
	if err := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField()).Decode(&overlay); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	m.Slug, m.Name = overlay.Slug, overlay.Name
	if overlay.Environments != nil {
		m.Environments = overlay.Environments
	}
	if overlay.Roles != nil {
		m.Roles = overlay.Roles
	}
	m.Members = overlay.Members
	if overlay.RetentionDays != 0 {
		m.RetentionDays = overlay.RetentionDays
	}
	if overlay.Retention != nil {
		m.Retention = overlay.Retention
		if r := overlay.Retention.RunDays; r != nil && overlay.RetentionDays == 0 {
			m.RetentionDays = *r
		}
	}
	if overlay.Budget.MonthlyUSD != 0 {
		m.Budget = overlay.Budget
	}
	if overlay.Plan.Weight != 0 {
		m.Plan.Weight = overlay.Plan.Weight
	}
	if overlay.Plan.MaxConcurrentSteps != 0 {
		m.Plan.MaxConcurrentSteps = overlay.Plan.MaxConcurrentSteps
	}
	if overlay.Plan.MaxConcurrentRuns != 0 {
		m.Plan.MaxConcurrentRuns = overlay.Plan.MaxConcurrentRuns
	}
	if overlay.Limits != nil {
		m.Limits = overlay.Limits
	}
	if overlay.SLA.RunDuration != "" {
		m.SLA.RunDuration = overlay.SLA.RunDuration
	}
	if overlay.SLA.ApprovalResponse != "" {
		m.SLA.ApprovalResponse = overlay.SLA.ApprovalResponse
	}
	if overlay.SLA.ReleaseRollback != "" {
		m.SLA.ReleaseRollback = overlay.SLA.ReleaseRollback
	}
	if overlay.SLA.EscalateTo != nil {
		m.SLA.EscalateTo = overlay.SLA.EscalateTo
	}
	return m, m.Validate()
}

// Default returns the default template with no slug or name.
func Default() (*Manifest, error) {
	var m Manifest
	if err := yaml.Unmarshal(defaultTemplate, &m); err != nil {
		return nil, fmt.Errorf("default template: %w", err)
	}
	return &m, nil
}

// Validate reports every problem of the manifest, each naming its field.
func (m *Manifest) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !slugRE.MatchString(m.Slug) {
		bad("slug", "must be 2-63 lower case letters, digits or dashes, starting with a letter (got %q)", m.Slug)
	}
	if m.Name == "" || len(m.Name) > 200 {
		bad("name", "must be 1 to 200 characters")
	}
	if len(m.Environments) == 0 {
		bad("environments", "at least one environment is required")
	}
	seen := map[string]bool{}
	for i, e := range m.Environments {
		f := fmt.Sprintf("environments[%d]", i)
		if !envRE.MatchString(e.Name) {
			bad(f+".name", "must be lower case letters, digits or dashes, starting with a letter (got %q)", e.Name)
		}
		if seen[e.Name] {
			bad(f+".name", "duplicate environment %q", e.Name)
		}
		seen[e.Name] = true
		switch e.Kind {
		case "development", "staging", "production":
		default:
			bad(f+".kind", "must be development, staging or production (got %q)", e.Kind)
		}
		if len(e.Vars) > envvars.MaxVariables {
			bad(f+".vars", "at most %d variables", envvars.MaxVariables)
		}
		for _, name := range slices.Sorted(maps.Keys(e.Vars)) {
			if _, msg := e.Vars[name].variable(name); msg != "" {
				bad(f+".vars."+name, "%s", msg)
			}
		}
	}
	for i, r := range m.Roles {
		if !viewer.KnownRole(r) {
			bad(fmt.Sprintf("roles[%d]", i), "unknown role %q", r)
		}
	}
	subjects := map[string]bool{}
	for i, mem := range m.Members {
		f := fmt.Sprintf("members[%d]", i)
		if mem.Subject == "" {
			bad(f+".subject", "is required")
		}
		if subjects[mem.Subject] {
			bad(f+".subject", "duplicate member %q", mem.Subject)
		}
		subjects[mem.Subject] = true
		if len(mem.Roles) == 0 {
			bad(f+".roles", "at least one role is required")
		}
		for j, r := range mem.Roles {
			if !viewer.KnownRole(r) {
				bad(fmt.Sprintf("%s.roles[%d]", f, j), "unknown role %q", r)
			}
		}
	}
	if m.RetentionDays < 1 || m.RetentionDays > 3650 {
		bad("retentionDays", "must be between 1 and 3650")
	}
	if r := m.Retention; r != nil {
		if r.RunDays != nil && *r.RunDays != m.RetentionDays {
			bad("retention.runDays", "is %d but retentionDays is %d: set one of them", *r.RunDays, m.RetentionDays)
		}
		checkRetention := func(path string, d RetentionDaysSpec, tenantLevel bool) {
			rng := func(f string, v *int, least int) {
				if v != nil && (*v < least || *v > 3650) {
					bad(path+f, "must be between %d and 3650", least)
				}
			}
			rng("payloadDays", d.PayloadDays, 0)
			rng("runDays", d.RunDays, 1)
			rng("auditDays", d.AuditDays, 1)
			rng("webhookDeliveryDays", d.WebhookDeliveryDays, 0)
			if !tenantLevel && d.AuditDays != nil {
				bad(path+"auditDays", "is set for the whole tenant only")
			}
			if !tenantLevel && d.WebhookDeliveryDays != nil {
				bad(path+"webhookDeliveryDays", "is set for the whole tenant only")
			}
			run := m.RetentionDays
			if d.RunDays != nil {
				run = *d.RunDays
			}
			if d.PayloadDays != nil && *d.PayloadDays > run {
				bad(path+"payloadDays", "must not exceed runDays (%d)", run)
			}
		}
		checkRetention("retention.", r.RetentionDaysSpec, true)
		for _, name := range slices.Sorted(maps.Keys(r.Environments)) {
			if !slices.ContainsFunc(m.Environments, func(e EnvironmentSpec) bool { return e.Name == name }) {
				bad("retention.environments."+name, "names no environment of the manifest")
			}
			checkRetention("retention.environments."+name+".", r.Environments[name], false)
		}
	}
	if m.Budget.MonthlyUSD < 0 {
		bad("budget.monthlyUSD", "must not be negative")
	}
	if m.Plan.Weight < 1 || m.Plan.Weight > 100 {
		bad("plan.weight", "must be between 1 and 100")
	}
	if m.Plan.MaxConcurrentSteps < 0 || m.Plan.MaxConcurrentSteps > 100000 {
		bad("plan.maxConcurrentSteps", "must be between 1 and 100000, or 0 for no cap")
	}
	if m.Plan.MaxConcurrentRuns < 0 || m.Plan.MaxConcurrentRuns > 100000 {
		bad("plan.maxConcurrentRuns", "must be between 1 and 100000, or 0 for no cap")
	}
	for name, n := range m.Limits {
		if !limits.ValidName(name) {
			bad("limits."+name, "a limit's name "+limits.NameRule)
		}
		if n < 1 || n > limits.MaxLimit {
			bad("limits."+name, "must be between 1 and %d", limits.MaxLimit)
		}
	}
	for field, v := range map[string]string{"sla.runDuration": m.SLA.RunDuration, "sla.approvalResponse": m.SLA.ApprovalResponse} {
		if v == "" {
			continue
		}
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			bad(field, "must be a positive duration such as 15m (got %q)", v)
		}
	}
	if v := m.SLA.ReleaseRollback; v != "" && !slaspec.Severity(strings.ToUpper(v)).Valid() {
		bad("sla.releaseRollback", "must be critical, error, warning or info (got %q)", v)
	}
	for i, r := range m.SLA.EscalateTo {
		if !viewer.KnownRole(r) {
			bad(fmt.Sprintf("sla.escalateTo[%d]", i), "unknown role %q", r)
		}
	}
	return errors.Join(errs...)
}

// variable is the spec as an environment variable, or why it is not one.
func (v VarSpec) variable(name string) (envvars.Variable, string) {
	if !envvars.NamePattern.MatchString(name) {
		return envvars.Variable{}, fmt.Sprintf("the name must be letters, digits and underscores, not starting with a digit, at most %d characters", envvars.MaxNameLen)
	}
	t := envvars.Type(strings.ToLower(v.Type))
	if v.Value == nil {
		return envvars.Variable{}, "value is required"
	}
	val, msg := envvars.Check(t, v.Value)
	if msg != "" {
		return envvars.Variable{}, msg
	}
	return envvars.Variable{Name: name, Type: t, Value: val}, ""
}
