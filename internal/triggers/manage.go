package triggers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/trigger"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	spec "github.com/sluicehq/sluice/internal/triggerspec"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Who manages triggers: they start runs of workflows, so the roles that
// own workflows (DESIGN: editor for workflows and versions; admin, owner).
var manageRoles = []string{viewer.RoleAdmin, viewer.RoleEditor}

// VerificationInput is a trigger's scheme and, optionally, its secret.
type VerificationInput struct {
	spec.Verification
	Secret *string
}

// CreateInput is what createTrigger takes.
type CreateInput struct {
	WorkflowID, EnvironmentID, Name string
	Verification                    VerificationInput
	Dedup                           *spec.Dedup
	Filter                          *string
	// InputMapping is a CEL string or an object of CEL strings (JSON).
	InputMapping any
	RateLimit    *spec.RateLimit
}

// UpdateInput is what updateTrigger takes; nil leaves a setting alone.
type UpdateInput struct {
	ID           string
	Name         *string
	Enabled      *bool
	Dedup        *spec.Dedup
	Filter       *string
	InputMapping any
	RateLimit    *spec.RateLimit
}

var schemes = map[string]bool{
	spec.SchemeStandardWebhooks: true, spec.SchemeStripe: true, spec.SchemeGitHub: true,
	spec.SchemeSlack: true, spec.SchemeHMAC: true, spec.SchemeStaticToken: true,
}

// checkVerification validates v (path "input.verification") and returns the
// secret to seal: the one given, or a new one where Sluice may make it.
func checkVerification(in VerificationInput) (secret string, generated bool, err error) {
	const p = "input.verification"
	v := in.Verification
	if !schemes[v.Scheme] {
		return "", false, errs.Invalid(p+".scheme", "unknown scheme %q", v.Scheme)
	}
	var problems []errs.Problem
	bad := func(field, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: p + "." + field, Message: fmt.Sprintf(format, args...)})
	}
	if v.ToleranceSeconds < 0 || v.ToleranceSeconds > 3600 {
		bad("toleranceSeconds", "must be 1 to 3600")
	}
	switch v.Scheme {
	case spec.SchemeHMAC:
		if !validHeaderName(v.Header) {
			bad("header", "a header name is required")
		}
		if v.Algorithm == "" {
			v.Algorithm = "sha256"
		}
		if v.Algorithm != "sha1" && v.Algorithm != "sha256" && v.Algorithm != "sha512" {
			bad("algorithm", "must be sha1, sha256 or sha512")
		}
		if v.Encoding != "" && v.Encoding != "hex" && v.Encoding != "base64" {
			bad("encoding", "must be hex or base64")
		}
		switch v.Signed {
		case "", "body":
		case "timestamp.body":
			if !validHeaderName(v.TimestampHeader) {
				bad("timestampHeader", "required when signed is timestamp.body")
			}
		default:
			bad("signed", "must be body or timestamp.body")
		}
	case spec.SchemeStaticToken:
		if !validHeaderName(v.Header) {
			bad("header", "a header name is required")
		}
	}
	if len(problems) > 0 {
		return "", false, errs.InvalidAll("invalid verification", problems)
	}
	if in.Secret != nil {
		secret = *in.Secret
		if len(secret) < 8 || len(secret) > 512 {
			return "", false, errs.Invalid(p+".secret", "must be 8 to 512 characters")
		}
		if v.Scheme == spec.SchemeStandardWebhooks {
			if _, err := StandardSecretKey(secret); err != nil {
				return "", false, errs.Invalid(p+".secret", "%v", err)
			}
		}
		return secret, false, nil
	}
	switch v.Scheme {
	case spec.SchemeStripe, spec.SchemeSlack:
		return "", false, errs.Invalid(p+".secret", "required: %s makes the signing secret", strings.ToLower(v.Scheme))
	}
	return newSecret(v.Scheme), true, nil
}

func validHeaderName(h string) bool {
	if h == "" || len(h) > 100 {
		return false
	}
	for _, r := range h {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// newSecret makes a secret in the form the scheme's senders expect.
func newSecret(scheme string) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	if scheme == spec.SchemeStandardWebhooks {
		return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
	}
	return hex.EncodeToString(b[:])
}

func checkDedup(d *spec.Dedup) error {
	if d == nil {
		return nil
	}
	if d.Key != "" {
		if _, err := compile(d.Key); err != nil {
			return errs.Invalid("input.dedup.key", "%v", err)
		}
	}
	if d.WindowSeconds != 0 && (d.WindowSeconds < 60 || d.WindowSeconds > 30*86400) {
		return errs.Invalid("input.dedup.windowSeconds", "must be 60 to 2592000")
	}
	return nil
}

func checkFilter(f *string) error {
	if f == nil || *f == "" {
		return nil
	}
	if _, err := compile(*f); err != nil {
		return errs.Invalid("input.filter", "%v", err)
	}
	return nil
}

// checkMapping turns the GraphQL value into a stored mapping.
func checkMapping(raw any) (spec.InputMapping, error) {
	const p = "input.inputMapping"
	switch m := raw.(type) {
	case nil:
		return spec.InputMapping{}, nil
	case string:
		if _, err := compile(m); err != nil {
			return spec.InputMapping{}, errs.Invalid(p, "%v", err)
		}
		return spec.InputMapping{Expr: m}, nil
	case map[string]any:
		if len(m) > 100 {
			return spec.InputMapping{}, errs.Invalid(p, "at most 100 fields")
		}
		fields := make(map[string]string, len(m))
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				return spec.InputMapping{}, errs.Invalid(p+"."+k, "must be a CEL expression (a string)")
			}
			if _, err := compile(s); err != nil {
				return spec.InputMapping{}, errs.Invalid(p+"."+k, "%v", err)
			}
			fields[k] = s
		}
		return spec.InputMapping{Fields: fields}, nil
	}
	return spec.InputMapping{}, errs.Invalid(p, "must be a CEL expression or an object of CEL expressions")
}

func checkRateLimit(r *spec.RateLimit) error {
	if r == nil {
		return nil
	}
	if r.PerSecond != 0 && (r.PerSecond < 0.01 || r.PerSecond > 1000) {
		return errs.Invalid("input.rateLimit.perSecond", "must be 0.01 to 1000")
	}
	if r.Burst != 0 && (r.Burst < 1 || r.Burst > 10000) {
		return errs.Invalid("input.rateLimit.burst", "must be 1 to 10000")
	}
	return nil
}

func checkName(name string) error {
	if n := len(strings.TrimSpace(name)); n == 0 || len(name) > 100 {
		return errs.Invalid("input.name", "must be 1 to 100 characters")
	}
	return nil
}

// CreateTrigger registers a trigger and returns it with its secret when
// Sluice generated it (shown once).
func (s *Service) CreateTrigger(ctx context.Context, in CreateInput) (*ent.Trigger, *string, error) {
	v, c, err := access.Authorize(ctx, manageRoles...)
	if err != nil {
		return nil, nil, err
	}
	if err := checkName(in.Name); err != nil {
		return nil, nil, err
	}
	secret, generated, err := checkVerification(in.Verification)
	if err != nil {
		return nil, nil, err
	}
	if err := checkDedup(in.Dedup); err != nil {
		return nil, nil, err
	}
	if err := checkFilter(in.Filter); err != nil {
		return nil, nil, err
	}
	mapping, err := checkMapping(in.InputMapping)
	if err != nil {
		return nil, nil, err
	}
	if err := checkRateLimit(in.RateLimit); err != nil {
		return nil, nil, err
	}
	// Another tenant's workflow or environment reads as one that does not
	// exist (privacy rules and RLS hide it).
	if _, err := c.Workflow.Get(ctx, in.WorkflowID); ent.IsNotFound(err) {
		return nil, nil, errs.Invalid("input.workflowID", "no such workflow")
	} else if err != nil {
		return nil, nil, err
	}
	env, err := c.Environment.Get(ctx, in.EnvironmentID)
	if ent.IsNotFound(err) || err == nil && !access.InScope(v, env.ID) {
		return nil, nil, errs.Invalid("input.environmentID", "no such environment")
	} else if err != nil {
		return nil, nil, err
	}
	if taken, err := c.Trigger.Query().Where(trigger.Name(in.Name)).Exist(ctx); err != nil {
		return nil, nil, err
	} else if taken {
		return nil, nil, errs.Invalid("input.name", "a trigger named %q exists", in.Name)
	}
	id := ids.New(ids.Trigger)
	sealed, err := s.opts.Vault.SealTriggerSecret(ctx, c, id, 1, secret)
	if err != nil {
		return nil, nil, err
	}
	ver := in.Verification.Verification
	if ver.Scheme == spec.SchemeHMAC && ver.Algorithm == "" {
		ver.Algorithm = "sha256"
	}
	create := c.Trigger.Create().SetID(id).SetWorkflowID(in.WorkflowID).SetEnvironmentID(in.EnvironmentID).
		SetName(in.Name).SetHookID(newHookID()).SetVerification(ver).SetSecret(sealed).SetSecretVersion(1).
		SetInputMapping(mapping).SetCreatedBy(v.Subject)
	if in.Dedup != nil {
		create.SetDedup(*in.Dedup)
	} else {
		create.SetDedup(spec.Dedup{})
	}
	if in.RateLimit != nil {
		create.SetRateLimit(*in.RateLimit)
	} else {
		create.SetRateLimit(spec.RateLimit{})
	}
	if in.Filter != nil {
		create.SetEventFilter(*in.Filter)
	}
	t, err := create.Save(ctx)
	if err != nil {
		return nil, nil, err
	}
	err = audit.Record(ctx, c, "trigger.create", "Trigger", t.ID, map[string]any{
		"name": t.Name, "workflowID": t.WorkflowID, "environmentID": t.EnvironmentID, "scheme": ver.Scheme})
	if err != nil {
		return nil, nil, err
	}
	if generated {
		return t, &secret, nil
	}
	return t, nil, nil
}

// load returns a trigger the viewer may manage, locked for update.
func (s *Service) load(ctx context.Context, c *ent.Client, v *viewer.Viewer, id string) (*ent.Trigger, error) {
	t, err := c.Trigger.Query().Where(trigger.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) || err == nil && !access.InScope(v, t.EnvironmentID) {
		return nil, errs.NotFoundf("trigger", id)
	}
	return t, err
}

// UpdateTrigger changes a trigger's name, state, dedup, filter, mapping or
// rate limit (its workflow, environment and scheme are fixed).
func (s *Service) UpdateTrigger(ctx context.Context, in UpdateInput) (*ent.Trigger, error) {
	v, c, err := access.Authorize(ctx, manageRoles...)
	if err != nil {
		return nil, err
	}
	t, err := s.load(ctx, c, v, in.ID)
	if err != nil {
		return nil, err
	}
	u := t.Update()
	changed := []string{}
	if in.Name != nil {
		if err := checkName(*in.Name); err != nil {
			return nil, err
		}
		if *in.Name != t.Name {
			if taken, err := c.Trigger.Query().Where(trigger.Name(*in.Name)).Exist(ctx); err != nil {
				return nil, err
			} else if taken {
				return nil, errs.Invalid("input.name", "a trigger named %q exists", *in.Name)
			}
		}
		u.SetName(*in.Name)
		changed = append(changed, "name")
	}
	if in.Enabled != nil {
		u.SetEnabled(*in.Enabled)
		changed = append(changed, "enabled")
	}
	if in.Dedup != nil {
		if err := checkDedup(in.Dedup); err != nil {
			return nil, err
		}
		u.SetDedup(*in.Dedup)
		changed = append(changed, "dedup")
	}
	if in.Filter != nil {
		if err := checkFilter(in.Filter); err != nil {
			return nil, err
		}
		u.SetEventFilter(*in.Filter)
		changed = append(changed, "filter")
	}
	if in.InputMapping != nil {
		m, err := checkMapping(in.InputMapping)
		if err != nil {
			return nil, err
		}
		u.SetInputMapping(m)
		changed = append(changed, "inputMapping")
	}
	if in.RateLimit != nil {
		if err := checkRateLimit(in.RateLimit); err != nil {
			return nil, err
		}
		u.SetRateLimit(*in.RateLimit)
		changed = append(changed, "rateLimit")
	}
	t, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	return t, audit.Record(ctx, c, "trigger.update", "Trigger", t.ID, map[string]any{"changed": changed})
}

// DeleteTrigger removes a trigger and its deliveries; its URL answers 404.
func (s *Service) DeleteTrigger(ctx context.Context, id string) (string, error) {
	v, c, err := access.Authorize(ctx, manageRoles...)
	if err != nil {
		return "", err
	}
	t, err := s.load(ctx, c, v, id)
	if err != nil {
		return "", err
	}
	if err := c.Trigger.DeleteOne(t).Exec(ctx); err != nil {
		return "", err
	}
	return id, audit.Record(ctx, c, "trigger.delete", "Trigger", id, map[string]any{"name": t.Name})
}

// RotateTriggerSecret replaces the secret (with secret, or a generated
// one); the previous one keeps verifying for the overlap. It returns the
// new secret when Sluice generated it.
func (s *Service) RotateTriggerSecret(ctx context.Context, id string, secret *string) (*ent.Trigger, *string, error) {
	v, c, err := access.Authorize(ctx, manageRoles...)
	if err != nil {
		return nil, nil, err
	}
	t, err := s.load(ctx, c, v, id)
	if err != nil {
		return nil, nil, err
	}
	plain, generated, err := checkVerification(VerificationInput{Verification: t.Verification, Secret: secret})
	if err != nil {
		return nil, nil, err
	}
	next := t.SecretVersion + 1
	sealed, err := s.opts.Vault.SealTriggerSecret(ctx, c, t.ID, next, plain)
	if err != nil {
		return nil, nil, err
	}
	until := s.now().Add(s.opts.SecretOverlap)
	t, err = t.Update().SetPreviousSecret(t.Secret).SetPreviousSecretExpiresAt(until).
		SetSecret(sealed).SetSecretVersion(next).Save(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := audit.Record(ctx, c, "trigger.rotate_secret", "Trigger", t.ID, map[string]any{"previousValidUntil": until.Format(time.RFC3339)}); err != nil {
		return nil, nil, err
	}
	if generated {
		return t, &plain, nil
	}
	return t, nil, nil
}
