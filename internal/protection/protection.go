// Package protection owns protected environments: what an environment
// requires of deploys and releases into it (approvals from given roles, a
// passing evaluation of the candidate, no freeze window in force), the
// gate every deploy, promotion and release creation passes, and the
// deployment approval requests (ApprovalRequest of kind DEPLOYMENT) that
// hold a deploy or a release until enough approvers agree, with their
// durable expiry. The definition of a protection is internal/protectspec;
// the control plane calls the gate through control.DeployGate and
// internal/releases through releases.Gate.
package protection

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/evaluation"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/evals"
	"github.com/sluicehq/sluice/internal/protectspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// EventRecorder writes a tenant event's webhook deliveries in the caller's
// transaction (webhook.Service.RecordEvent).
type EventRecorder interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// Options configure a Service.
type Options struct {
	Client  *ent.Client // the app role's pool, for the expiry sweep
	Control *control.Service
	Events  EventRecorder
	Log     *slog.Logger
	// Now is the clock. If nil, the UTC wall clock at microseconds.
	Now func() time.Time
	// Interval is how often expired requests are swept. If zero, 30s
	// (SLUICE_DEPLOY_APPROVAL_SWEEP_INTERVAL).
	Interval time.Duration
}

// Service is the protected environments room's door.
type Service struct{ o Options }

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Interval <= 0 {
		o.Interval = 30 * time.Second
	}
	return &Service{o: o}
}

// SetInput is what setEnvironmentProtection takes.
type SetInput struct {
	EnvironmentID string
	Protection    protectspec.Protection
}

// SetEnvironmentProtection replaces an environment's protection; one that
// requires nothing removes it. Admins only; audited.
func (s *Service) SetEnvironmentProtection(ctx context.Context, in SetInput) (*ent.Environment, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	p := in.Protection
	p.Normalize()
	if problems := p.Validate("input"); len(problems) > 0 {
		return nil, errs.InvalidAll("the protection is not valid", problems)
	}
	env, err := control.EnvironmentByID(ctx, c, in.EnvironmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	u := env.Update()
	if p.Active() {
		if len(p.ApproverRoles) == 0 {
			p.ApproverRoles = protectspec.DefaultApproverRoles
		}
		if p.ApprovalTimeout == "" {
			p.ApprovalTimeout = protectspec.DefaultApprovalTimeout.String()
		}
		if p.Evaluation != nil && p.Evaluation.MaxAge == "" {
			p.Evaluation.MaxAge = protectspec.DefaultEvaluationAge.String()
		}
		u.SetProtection(&p)
	} else {
		u.ClearProtection()
	}
	if env, err = u.Save(ctx); err != nil {
		return nil, err
	}
	var meta map[string]any
	raw, _ := json.Marshal(p)
	_ = json.Unmarshal(raw, &meta)
	return env, audit.Record(ctx, c, "environment.protect", "Environment", env.ID, map[string]any{"environment": env.Name, "protection": meta, "protected": p.Active()})
}

// CheckDeploy is control.DeployGate: a direct deploy or promotion into a
// protected environment passes the freeze windows and the evaluation, and
// is refused when the environment requires approvals (requestDeployment
// waits for them).
func (s *Service) CheckDeploy(ctx context.Context, c *ent.Client, v *viewer.Viewer, wv *ent.WorkflowVersion, env *ent.Environment, versionPath, envPath string) error {
	p := env.Protection
	if !p.Active() {
		return nil
	}
	if _, err := s.gates(ctx, c, p, wv, env, versionPath, envPath); err != nil {
		return err
	}
	if p.RequiredApprovals > 0 {
		return &errs.Error{Code: errs.Conflict,
			Message:  fmt.Sprintf("environment %s requires %s from %s before a deploy: use requestDeployment, which waits for them", env.Name, plural(p.RequiredApprovals, "approval"), strings.Join(p.Roles(), " or ")),
			Problems: []errs.Problem{{Path: envPath, Message: "requires approvals"}}}
	}
	return nil
}

// CheckRelease is releases.Gate: a release into a protected environment
// passes the freeze windows and the evaluation of its candidate; wait
// reports that it must wait for approvals (PENDING_APPROVAL).
func (s *Service) CheckRelease(ctx context.Context, c *ent.Client, v *viewer.Viewer, wv *ent.WorkflowVersion, env *ent.Environment) (bool, error) {
	p := env.Protection
	if !p.Active() {
		return false, nil
	}
	if _, err := s.gates(ctx, c, p, wv, env, "input.candidateVersionID", "input.environmentID"); err != nil {
		return false, err
	}
	return p.RequiredApprovals > 0, nil
}

// gates checks the freeze windows and the evaluation; it returns the
// evidence (the evaluation used) for the approvers' context.
func (s *Service) gates(ctx context.Context, c *ent.Client, p *protectspec.Protection, wv *ent.WorkflowVersion, env *ent.Environment, versionPath, envPath string) (map[string]any, error) {
	now := s.o.Now()
	if err := control.CheckFreeze(env, now, envPath); err != nil {
		return nil, err
	}
	if p.Evaluation == nil {
		return map[string]any{}, nil
	}
	return s.checkEvaluation(ctx, c, p.Evaluation, wv, env, versionPath, now)
}

// checkEvaluation finds the newest completed evaluation of wv (as
// published, without model overrides) on a dataset of env's runs and
// checks its age and the policy. Evaluations of other environments'
// runs do not count: the evidence is the protected environment's traffic.
func (s *Service) checkEvaluation(ctx context.Context, c *ent.Client, rule *protectspec.EvaluationRule, wv *ent.WorkflowVersion, env *ent.Environment, path string, now time.Time) (map[string]any, error) {
	refuse := func(why string) error {
		msg := fmt.Sprintf("environment %s requires a passing evaluation of version %d on its runs (%s): %s", env.Name, wv.Number, describeRule(rule), why)
		return &errs.Error{Code: errs.Validation, Message: msg, Problems: []errs.Problem{{Path: path, Message: why}}}
	}
	list, err := c.Evaluation.Query().
		Where(evaluation.WorkflowID(wv.WorkflowID), evaluation.CandidateVersionID(wv.ID), evaluation.EnvironmentID(env.ID),
			evaluation.StatusEQ(evaluation.StatusCompleted), evaluation.FinishedAtNotNil()).
		Order(ent.Desc(evaluation.FieldFinishedAt), ent.Desc(evaluation.FieldID)).Limit(20).All(ctx)
	if err != nil {
		return nil, err
	}
	var ev *ent.Evaluation
	for _, e := range list {
		if len(e.ModelOverrides) == 0 {
			ev = e
			break
		}
	}
	if ev == nil {
		return nil, refuse("no completed evaluation of this version exists (evaluateVersion with candidateVersionID)")
	}
	if age := now.Sub(*ev.FinishedAt); age > rule.Age() {
		return nil, refuse(fmt.Sprintf("the newest, %s, finished %s ago, more than %s", ev.ID, age.Round(time.Minute), rule.Age()))
	}
	var sum evals.Summary
	raw, _ := json.Marshal(ev.Summary)
	if err := json.Unmarshal(raw, &sum); err != nil {
		return nil, err
	}
	if v := sum.Violations(evals.Policy{MinPassRate: rule.MinPassRate, MaxRegressions: rule.MaxRegressions,
		MaxCostIncreasePct: rule.MaxCostIncreasePct, MaxP95IncreasePct: rule.MaxP95IncreasePct}); len(v) > 0 {
		return nil, refuse(fmt.Sprintf("the newest, %s, fails: %s", ev.ID, strings.Join(v, "; ")))
	}
	return map[string]any{"evaluation": map[string]any{"id": ev.ID, "finishedAt": ev.FinishedAt.UTC().Format(time.RFC3339Nano),
		"baselineVersionID": ev.BaselineVersionID, "summary": ev.Summary}}, nil
}

func describeRule(r *protectspec.EvaluationRule) string {
	parts := []string{"at most " + r.Age().String() + " old"}
	if r.MinPassRate != nil {
		parts = append(parts, fmt.Sprintf("minPassRate %g", *r.MinPassRate))
	}
	if r.MaxRegressions != nil {
		parts = append(parts, fmt.Sprintf("maxRegressions %d", *r.MaxRegressions))
	}
	if r.MaxCostIncreasePct != nil {
		parts = append(parts, fmt.Sprintf("maxCostIncreasePct %g", *r.MaxCostIncreasePct))
	}
	if r.MaxP95IncreasePct != nil {
		parts = append(parts, fmt.Sprintf("maxP95IncreasePct %g", *r.MaxP95IncreasePct))
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// record writes an audit entry and, when t is set, the tenant event.
func (s *Service) record(ctx context.Context, c *ent.Client, tenantID, action, targetType, targetID string, t string, data map[string]any) error {
	if err := audit.Record(ctx, c, action, targetType, targetID, data); err != nil {
		return err
	}
	if t == "" || s.o.Events == nil {
		return nil
	}
	_, err := s.o.Events.RecordEvent(ctx, c, tenantID, webhook.Event{Type: eventType(t), Data: data}, s.o.Now())
	return err
}

// RunExpirer expires deployment approval requests past their timeout
// every Interval until ctx ends, under the singleton lock.
func (s *Service) RunExpirer(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, ExpirerName, s.o.Log, func() time.Duration { return s.o.Interval }, func(ctx context.Context) error {
		_, err := s.Expire(ctx)
		return err
	})
}

// ExpirerName is the singleton lock's name.
const ExpirerName = "deployment-approval-expiry"
