package ratelimit

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/internal/store"
)

// State is a policy's live state.
type State struct {
	NextSlotAt    *time.Time // nil: a call may go now
	InFlight      int
	CooldownUntil *time.Time // nil: none
}

// State reads p's live state from Redis. A HOST policy kept per credential
// has a bucket per credential of the tenant: the latest next slot and
// cooldown and the sum of calls in flight over them.
func (s *Service) State(ctx context.Context, p *ent.RateLimit) (*State, error) {
	pol := policyOf(p)
	buckets := []string{"p:" + p.ID}
	if !pol.credential && !pol.across {
		c, err := store.Client(ctx)
		if err != nil {
			return nil, err
		}
		creds, err := c.Credential.Query().Select(credential.FieldEnvironmentID, credential.FieldName).All(ctx)
		if err != nil {
			return nil, err
		}
		buckets = buckets[:0]
		for _, cr := range creds {
			buckets = append(buckets, "p:"+p.ID+":"+cr.EnvironmentID+"/"+cr.Name)
		}
		buckets = append(buckets, "p:"+p.ID+":"+"-")
	}
	now := time.Now()
	tenantID := p.TenantID
	pipe := s.rdb.Pipeline()
	type reads struct {
		tat, cd *redis.StringCmd
		sem     *redis.IntCmd
	}
	rs := make([]reads, len(buckets))
	for i, b := range buckets {
		rs[i] = reads{
			tat: pipe.Get(ctx, tatKey(tenantID, b)),
			cd:  pipe.Get(ctx, cooldownKey(tenantID, b)),
			sem: pipe.ZCount(ctx, semKey(tenantID, b), strconv.FormatInt(now.UnixMilli(), 10), "+inf"),
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	st := &State{}
	for _, r := range rs {
		if ms, err := r.tat.Int64(); err == nil && pol.interval > 0 {
			at := time.UnixMilli(ms).Add(-pol.tolerance)
			if at.After(now) && (st.NextSlotAt == nil || at.After(*st.NextSlotAt)) {
				st.NextSlotAt = &at
			}
		}
		if ms, err := r.cd.Int64(); err == nil {
			at := time.UnixMilli(ms)
			if at.After(now) && (st.CooldownUntil == nil || at.After(*st.CooldownUntil)) {
				st.CooldownUntil = &at
			}
		}
		if n, err := r.sem.Result(); err == nil {
			st.InFlight += int(n)
		}
	}
	if st.CooldownUntil != nil && (st.NextSlotAt == nil || st.CooldownUntil.After(*st.NextSlotAt)) {
		st.NextSlotAt = st.CooldownUntil
	}
	return st, nil
}
