package ratelimit

import (
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/retryafter"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Limiter is the check calls pass right before they are sent
// (steps.Limiter). It is safe for concurrent use.
//
// Policies are cached per tenant under a version token kept in Redis
// (sluice:rl:{tenant}:ver), which every policy change replaces after its
// commit; the check script compares the token first, so a call costs one
// Redis round trip whether or not a policy applies, and a changed token
// reloads the tenant's policies from Postgres.
type Limiter struct {
	rdb     redis.UniversalClient
	client  *ent.Client
	log     *slog.Logger
	metrics *Metrics
	now     func() time.Time
	// ConcurrencyPoll is how soon a call refused for concurrency looks
	// again when no holder expires sooner. If zero, 250ms.
	concurrencyPoll time.Duration
	cache           sync.Map // tenant id -> *policySet
}

// LimiterOptions configure a Limiter.
type LimiterOptions struct {
	Redis   redis.UniversalClient
	Client  *ent.Client // app role pool, to read policies and write cooldowns
	Log     *slog.Logger
	Metrics *Metrics // if nil, none are recorded
	// ConcurrencyPoll: see Limiter. If zero, 250ms.
	ConcurrencyPoll time.Duration
}

// NewLimiter returns a limiter.
func NewLimiter(o LimiterOptions) *Limiter {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.ConcurrencyPoll <= 0 {
		o.ConcurrencyPoll = 250 * time.Millisecond
	}
	return &Limiter{rdb: o.Redis, client: o.Client, log: o.Log, metrics: o.Metrics, now: time.Now, concurrencyPoll: o.ConcurrencyPoll}
}

// policySet is a tenant's policies as of a version token.
type policySet struct {
	version  string
	loaded   time.Time
	policies []policy
}

// maxPolicyAge bounds how long a policy set is used without reading it
// again, should a version bump have been lost.
const maxPolicyAge = time.Minute

// policy is a RateLimit as the hot path uses it.
type policy struct {
	id            string
	credential    bool // scope CREDENTIAL, else HOST
	environmentID string
	name          string // credential name
	host          string
	across        bool
	interval      time.Duration // emission interval: period / rate; 0: no rate
	tolerance     time.Duration // (burst-1) * interval
	maxConcurrent int
}

func policyOf(p *ent.RateLimit) policy {
	out := policy{id: p.ID, credential: string(p.Scope) == "CREDENTIAL", across: p.AcrossCredentials, maxConcurrent: p.MaxConcurrent}
	if p.EnvironmentID != nil {
		out.environmentID = *p.EnvironmentID
	}
	if p.CredentialName != nil {
		out.name = *p.CredentialName
	}
	if p.Host != nil {
		out.host = *p.Host
	}
	if period, err := time.ParseDuration(p.Period); err == nil && p.Rate > 0 && period > 0 {
		out.interval = period / time.Duration(p.Rate)
		if out.interval <= 0 {
			out.interval = time.Millisecond
		}
		out.tolerance = time.Duration(max(p.Burst-1, 0)) * out.interval
	}
	return out
}

// bucket is the policy's bucket for a call, "" when it does not apply.
func (p policy) bucket(c steps.LimitedCall) string {
	switch {
	case p.credential:
		if c.Credential == "" || c.Credential != p.name || c.EnvironmentID != p.environmentID {
			return ""
		}
		return "p:" + p.id
	case !strings.EqualFold(c.Host, p.host):
		return ""
	case p.across:
		return "p:" + p.id
	}
	cred := c.Credential
	if cred == "" {
		cred = "-"
	}
	return "p:" + p.id + ":" + c.EnvironmentID + "/" + cred
}

type applied struct {
	p      policy
	bucket string
}

func (s *policySet) matching(c steps.LimitedCall) []applied {
	var out []applied
	for _, p := range s.policies {
		if b := p.bucket(c); b != "" {
			out = append(out, applied{p, b})
		}
	}
	return out
}

// load reads a tenant's policies, under the version token Redis holds
// (setting one if Redis has none, after a wipe).
func (l *Limiter) load(ctx context.Context, tenantID string) (*policySet, error) {
	ver, err := l.rdb.Get(ctx, versionKey(tenantID)).Result()
	if err == redis.Nil {
		if err := l.rdb.SetNX(ctx, versionKey(tenantID), newToken(), 0).Err(); err != nil {
			return nil, err
		}
		ver, err = l.rdb.Get(ctx, versionKey(tenantID)).Result()
	}
	if err != nil {
		return nil, err
	}
	var list []*ent.RateLimit
	err = store.InTenant(viewer.SystemContext(ctx, tenantID), l.client, func(ctx context.Context) error {
		var err error
		list, err = ent.FromContext(ctx).RateLimit.Query().All(ctx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read rate limits: %w", err)
	}
	set := &policySet{version: ver, loaded: time.Now()}
	for _, p := range list {
		set.policies = append(set.policies, policyOf(p))
	}
	l.cache.Store(tenantID, set)
	l.metrics.reload()
	return set, nil
}

func (l *Limiter) policies(ctx context.Context, tenantID string) (*policySet, error) {
	if v, ok := l.cache.Load(tenantID); ok && time.Since(v.(*policySet).loaded) < maxPolicyAge {
		return v.(*policySet), nil
	}
	return l.load(ctx, tenantID)
}

// Acquire implements steps.Limiter.
func (l *Limiter) Acquire(ctx context.Context, c steps.LimitedCall) (func(), error) {
	start := time.Now()
	defer func() { l.metrics.checked(time.Since(start)) }()
	for try := 0; ; try++ {
		set, err := l.policies(ctx, c.TenantID)
		if err != nil {
			l.fault(ctx, "load", err)
			return nil, nil
		}
		ap := set.matching(c)
		holder := c.AttemptID + ":" + newToken()
		keys := []string{versionKey(c.TenantID), cooldownKey(c.TenantID, hostBucket(c.Host))}
		args := []any{set.version, len(ap), holder, c.Hold.Milliseconds(), l.concurrencyPoll.Milliseconds()}
		for _, a := range ap {
			keys = append(keys, cooldownKey(c.TenantID, a.bucket), tatKey(c.TenantID, a.bucket), semKey(c.TenantID, a.bucket),
				reservationKey(c.TenantID, a.bucket, c.AttemptID))
			args = append(args, a.p.interval.Milliseconds(), a.p.tolerance.Milliseconds(), a.p.maxConcurrent)
		}
		res, err := checkScript.Run(ctx, l.rdb, keys, args...).Slice()
		if err != nil {
			l.fault(ctx, "check", err)
			return nil, nil
		}
		switch code, _ := res[0].(int64); code {
		case 0:
			if try >= 2 {
				l.fault(ctx, "check", fmt.Errorf("policy version keeps changing"))
				return nil, nil
			}
			if _, err := l.load(ctx, c.TenantID); err != nil {
				l.fault(ctx, "load", err)
				return nil, nil
			}
			continue
		case 1:
			l.metrics.allowed()
			return l.releaser(c, ap, holder), nil
		default:
			ms, _ := strconv.ParseInt(fmt.Sprint(res[1]), 10, 64)
			cause, _ := res[2].(string)
			idx, _ := res[3].(int64)
			scope := hostBucket(c.Host)
			if idx > 0 && int(idx) <= len(ap) {
				scope = ap[idx-1].bucket
			}
			until := time.UnixMilli(ms)
			switch cause {
			case "cooldown":
				until = until.Add(jitter(until.Sub(l.now())))
			case "concurrency":
				// Callers polling a full semaphore spread out.
				until = until.Add(rand.N(l.concurrencyPoll))
			}
			l.metrics.waited(cause)
			return nil, &steps.Deferral{Reason: steps.DeferRateLimit, Until: until, Cause: cause, Scope: scope}
		}
	}
}

// releaser frees the call's concurrency slots once its response is in.
func (l *Limiter) releaser(c steps.LimitedCall, ap []applied, holder string) func() {
	var sems []string
	for _, a := range ap {
		if a.p.maxConcurrent > 0 {
			sems = append(sems, semKey(c.TenantID, a.bucket))
		}
	}
	if len(sems) == 0 {
		return func() {}
	}
	return func() {
		// Not the call's context: a cancelled call still frees its slot.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		pipe := l.rdb.Pipeline()
		for _, k := range sems {
			pipe.ZRem(ctx, k, holder)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			// The hold expires by itself (steps.LimitedCall.Hold).
			l.fault(ctx, "release", err)
		}
	}
}

// Observe implements steps.Limiter: a 429 or 503 asking callers to wait
// cools down the call's scope (its policies' buckets, or its host when no
// policy applies) for every worker, and defers the attempt to its end.
func (l *Limiter) Observe(ctx context.Context, c steps.LimitedCall, status int, h http.Header) *steps.Deferral {
	now := l.now()
	wait := retryafter.Cooldown(h, now)
	if wait <= 0 {
		return nil
	}
	until := now.Add(wait)
	var buckets []string
	if set, err := l.policies(ctx, c.TenantID); err == nil {
		for _, a := range set.matching(c) {
			buckets = append(buckets, a.bucket)
		}
	}
	if len(buckets) == 0 {
		buckets = []string{hostBucket(c.Host)}
	}
	if err := l.setCooldown(ctx, c.TenantID, buckets, until, status); err != nil {
		l.fault(ctx, "cooldown", err)
	}
	l.metrics.cooldown(status)
	l.metrics.waited("cooldown")
	return &steps.Deferral{Reason: steps.DeferRateLimit, Until: until.Add(jitter(wait)), Cause: "cooldown", Scope: buckets[0], StatusCode: status}
}

// setCooldown writes a cooldown to Redis first (every worker sees it on
// its next check) and then to Postgres (durable; the restorer copies it
// back to Redis after a wipe).
func (l *Limiter) setCooldown(ctx context.Context, tenantID string, buckets []string, until time.Time, status int) error {
	ctx = context.WithoutCancel(ctx)
	keys := make([]string, len(buckets))
	for i, b := range buckets {
		keys[i] = cooldownKey(tenantID, b)
	}
	ttl := time.Until(until) + time.Second
	redisErr := cooldownScript.Run(ctx, l.rdb, keys, until.UnixMilli(), ttl.Milliseconds()).Err()
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), l.client, func(ctx context.Context) error {
		return saveCooldowns(ctx, tenantID, buckets, until, status)
	})
	if redisErr != nil {
		return redisErr
	}
	return err
}

// fault logs a limiter failure; the call goes on unlimited rather than
// stopping work.
func (l *Limiter) fault(ctx context.Context, op string, err error) {
	l.metrics.failed(op)
	l.log.WarnContext(ctx, "rate limiter", "op", op, "err", err)
}

// jitter spreads the wake-ups of calls waiting for the same instant: up
// to a fifth of the wait, at most 500ms.
func jitter(wait time.Duration) time.Duration {
	span := min(wait/5, 500*time.Millisecond)
	if span <= 0 {
		return 0
	}
	return rand.N(span)
}

func newToken() string {
	b := make([]byte, 8)
	_, _ = cryptorand.Read(b)
	return hex.EncodeToString(b)
}
