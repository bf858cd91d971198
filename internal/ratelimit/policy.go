package ratelimit

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/environment"
	entratelimit "github.com/sluicehq/sluice/ent/ratelimit"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Bounds of a policy.
const (
	MaxRate          = 1_000_000
	MaxBurst         = 1_000_000
	MaxConcurrent    = 10_000
	MaxPeriod        = 24 * time.Hour
	defaultPeriod    = "1s"
	maxHostLen       = 255
	maxPoliciesPerTn = 1000
)

// Service is the control plane of limit policies and the reader of their
// live state. Mutations are for admins and audited.
type Service struct {
	rdb redis.UniversalClient
}

// NewService returns the control plane of limit policies; rdb is where
// policy versions and live state are.
func NewService(rdb redis.UniversalClient) *Service { return &Service{rdb: rdb} }

// PolicyInput is a policy as given to create (all fields) or update (only
// the rate fields; nil: unchanged).
type PolicyInput struct {
	Scope             entratelimit.Scope
	CredentialID      *string
	EnvironmentID     *string
	CredentialName    *string
	Host              *string
	AcrossCredentials *bool
	Rate              *int
	Period            *string
	Burst             *int
	MaxConcurrent     *int
}

type problems []errs.Problem

func (p *problems) add(path, format string, args ...any) {
	*p = append(*p, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// checkRates validates the rate fields of in against the policy's current
// values (cur, nil when creating).
func checkRates(in PolicyInput, cur *ent.RateLimit, ps *problems) {
	rate, burst, maxc, period := 0, 1, 0, defaultPeriod
	if cur != nil {
		rate, burst, maxc, period = cur.Rate, cur.Burst, cur.MaxConcurrent, cur.Period
	}
	if in.Rate != nil {
		rate = *in.Rate
		if rate < 0 || rate > MaxRate {
			ps.add("input.rate", "must be between 0 and %d", MaxRate)
		}
	}
	if in.Burst != nil {
		burst = *in.Burst
		if burst < 1 || burst > MaxBurst {
			ps.add("input.burst", "must be between 1 and %d", MaxBurst)
		}
	}
	if in.MaxConcurrent != nil {
		maxc = *in.MaxConcurrent
		if maxc < 0 || maxc > MaxConcurrent {
			ps.add("input.maxConcurrent", "must be between 0 and %d", MaxConcurrent)
		}
	}
	if in.Period != nil {
		period = *in.Period
		d, err := time.ParseDuration(period)
		switch {
		case err != nil:
			ps.add("input.period", "must be a Go duration such as \"1s\" or \"1m\"")
		case d <= 0:
			ps.add("input.period", "must be above zero")
		case d > MaxPeriod:
			ps.add("input.period", "must be at most %s", MaxPeriod)
		case d < time.Millisecond:
			ps.add("input.period", "must be at least 1ms")
		}
	}
	if rate == 0 && maxc == 0 && (in.Rate == nil || *in.Rate >= 0) && (in.MaxConcurrent == nil || *in.MaxConcurrent >= 0) {
		ps.add("input.rate", "set a rate above 0 or a maxConcurrent above 0: this policy limits nothing")
	}
}

// normalizeHost is h as policies and calls compare it: lower case,
// host[:port], or an error message.
func normalizeHost(h string) (string, string) {
	h = strings.ToLower(strings.TrimSpace(h))
	if h == "" {
		return "", "is required for scope HOST"
	}
	if len(h) > maxHostLen {
		return "", fmt.Sprintf("must be at most %d characters", maxHostLen)
	}
	u, err := url.Parse("//" + h)
	if err != nil || u.Host != h || u.User != nil || u.Path != "" || strings.ContainsAny(h, "/?#@ ") {
		return "", "must be a host name with an optional :port, such as api.example.com (no scheme or path)"
	}
	if host, port, err := net.SplitHostPort(h); err == nil {
		if host == "" || port == "" {
			return "", "must be a host name with an optional :port"
		}
		if port == "443" || port == "80" {
			// Calls name a default port no more (steps.limitHost).
			h = strings.TrimSuffix(h, ":"+port)
		}
	}
	return h, ""
}

// CreatePolicy stores a new limit policy. Admins only.
func (s *Service) CreatePolicy(ctx context.Context, in PolicyInput) (*ent.RateLimit, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	var ps problems
	cr := c.RateLimit.Create().SetScope(in.Scope).SetCreatedBy(v.Subject)
	var key string
	switch in.Scope {
	case entratelimit.ScopeCredential:
		if in.Host != nil {
			ps.add("input.host", "is only for scope HOST")
		}
		if in.AcrossCredentials != nil {
			ps.add("input.acrossCredentials", "is only for scope HOST")
		}
		var cred *ent.Credential
		switch {
		case in.CredentialID != nil && (in.EnvironmentID != nil || in.CredentialName != nil):
			ps.add("input.credentialID", "give the credential by id or by environmentID and credentialName, not both")
		case in.CredentialID != nil:
			cred, err = c.Credential.Get(ctx, *in.CredentialID)
			if err != nil && !ent.IsNotFound(err) {
				return nil, err
			}
			if cred == nil {
				ps.add("input.credentialID", "no credential %q in this tenant", *in.CredentialID)
			}
		case in.EnvironmentID == nil || in.CredentialName == nil:
			ps.add("input.credentialID", "scope CREDENTIAL needs credentialID, or environmentID and credentialName")
		default:
			ok, err := c.Environment.Query().Where(environment.ID(*in.EnvironmentID)).Exist(ctx)
			if err != nil {
				return nil, err
			}
			if !ok {
				ps.add("input.environmentID", "no environment %q in this tenant", *in.EnvironmentID)
				break
			}
			cred, err = c.Credential.Query().Where(credential.EnvironmentID(*in.EnvironmentID), credential.Name(*in.CredentialName)).Only(ctx)
			if err != nil && !ent.IsNotFound(err) {
				return nil, err
			}
			if cred == nil {
				ps.add("input.credentialName", "no credential %q in environment %s", *in.CredentialName, *in.EnvironmentID)
			}
		}
		if cred != nil {
			cr.SetEnvironmentID(cred.EnvironmentID).SetCredentialName(cred.Name)
			key = "cred:" + cred.EnvironmentID + "/" + cred.Name
		}
	case entratelimit.ScopeHost:
		if in.CredentialID != nil || in.EnvironmentID != nil || in.CredentialName != nil {
			ps.add("input.credentialID", "credentialID, environmentID and credentialName are only for scope CREDENTIAL")
		}
		host := ""
		if in.Host != nil {
			host = *in.Host
		}
		h, msg := normalizeHost(host)
		if msg != "" {
			ps.add("input.host", "%s", msg)
		}
		cr.SetHost(h)
		key = "host:" + h
		if in.AcrossCredentials != nil {
			cr.SetAcrossCredentials(*in.AcrossCredentials)
		}
	default:
		ps.add("input.scope", "must be CREDENTIAL or HOST")
	}
	checkRates(in, nil, &ps)
	if len(ps) > 0 {
		return nil, errs.InvalidAll("invalid rate limit", ps)
	}
	if n, err := c.RateLimit.Query().Count(ctx); err != nil {
		return nil, err
	} else if n >= maxPoliciesPerTn {
		return nil, errs.Invalid("input", "a tenant may have at most %d rate limits", maxPoliciesPerTn)
	}
	cr.SetScopeKey(key)
	if in.Rate != nil {
		cr.SetRate(*in.Rate)
	}
	if in.Period != nil {
		cr.SetPeriod(*in.Period)
	}
	if in.Burst != nil {
		cr.SetBurst(*in.Burst)
	}
	if in.MaxConcurrent != nil {
		cr.SetMaxConcurrent(*in.MaxConcurrent)
	}
	p, err := cr.Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "a rate limit for "+key)
	}
	s.bumpAfterCommit(ctx, v.TenantID)
	return p, audit.Record(ctx, c, "rate_limit.create", "RateLimit", p.ID, auditMeta(p))
}

// UpdatePolicy changes a policy's rate, period, burst or maxConcurrent.
// Its scope cannot change: delete it and create another.
func (s *Service) UpdatePolicy(ctx context.Context, id string, in PolicyInput) (*ent.RateLimit, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	p, err := c.RateLimit.Query().Where(entratelimit.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("rate limit", id)
	}
	if err != nil {
		return nil, err
	}
	var ps problems
	checkRates(in, p, &ps)
	if len(ps) > 0 {
		return nil, errs.InvalidAll("invalid rate limit", ps)
	}
	u := p.Update()
	if in.Rate != nil {
		u.SetRate(*in.Rate)
	}
	if in.Period != nil {
		u.SetPeriod(*in.Period)
	}
	if in.Burst != nil {
		u.SetBurst(*in.Burst)
	}
	if in.MaxConcurrent != nil {
		u.SetMaxConcurrent(*in.MaxConcurrent)
	}
	if p, err = u.Save(ctx); err != nil {
		return nil, err
	}
	s.bumpAfterCommit(ctx, v.TenantID)
	return p, audit.Record(ctx, c, "rate_limit.update", "RateLimit", p.ID, auditMeta(p))
}

// DeletePolicy removes a policy; calls in its scope are no longer limited
// by it from the next check on.
func (s *Service) DeletePolicy(ctx context.Context, id string) (string, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.RateLimit.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("rate limit", id)
	} else if err != nil {
		return "", err
	}
	s.bumpAfterCommit(ctx, v.TenantID)
	return id, audit.Record(ctx, c, "rate_limit.delete", "RateLimit", id, nil)
}

func auditMeta(p *ent.RateLimit) map[string]any {
	return map[string]any{"scopeKey": p.ScopeKey, "rate": p.Rate, "period": p.Period, "burst": p.Burst, "maxConcurrent": p.MaxConcurrent}
}

// bumpAfterCommit replaces the tenant's policy version token once the
// change is committed: every limiter reloads the tenant's policies on its
// next check. Limiters also reload a set older than maxPolicyAge, in case
// this write is lost.
func (s *Service) bumpAfterCommit(ctx context.Context, tenantID string) {
	if s.rdb == nil {
		return
	}
	store.AfterCommit(ctx, func() {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.rdb.Set(bctx, versionKey(tenantID), newToken(), 0).Err()
	})
}
