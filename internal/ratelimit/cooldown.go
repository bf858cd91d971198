package ratelimit

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/ratelimitcooldown"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// saveCooldowns upserts the cooldowns of buckets in the tenant transaction
// of ctx, keeping the later end.
func saveCooldowns(ctx context.Context, tenantID string, buckets []string, until time.Time, status int) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	for _, b := range buckets {
		_, err := q.Exec(ctx, `INSERT INTO rate_limit_cooldowns (id, tenant_id, scope, until, status_code, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
ON CONFLICT (tenant_id, scope) DO UPDATE SET until = GREATEST(rate_limit_cooldowns.until, EXCLUDED.until),
  status_code = EXCLUDED.status_code, updated_at = EXCLUDED.updated_at`,
			ids.New(ids.RateLimitCooldown), tenantID, b, until.UTC(), status, now)
		if err != nil {
			return fmt.Errorf("save cooldown: %w", err)
		}
	}
	return nil
}

// Restorer copies the cooldowns Postgres holds back into Redis, so a Redis
// wipe loses none (the hot path reads only Redis), and deletes rows long
// over. It runs as a singleton (store.RunSingleton) in workers.
type Restorer struct {
	Redis    redis.UniversalClient
	Client   *ent.Client
	Log      *slog.Logger
	Interval time.Duration // if zero, 5s
}

// keepOver is how long an ended cooldown's row stays (for the API).
const keepOver = time.Hour

// Run restores until ctx ends.
func (r *Restorer) Run(ctx context.Context, db *sql.DB) {
	if r.Log == nil {
		r.Log = slog.Default()
	}
	every := r.Interval
	if every <= 0 {
		every = 5 * time.Second
	}
	store.RunSingleton(ctx, db, "rate-limit-cooldowns", r.Log, func() time.Duration { return every }, r.Pass)
}

// Pass restores every tenant's unexpired cooldowns once.
func (r *Restorer) Pass(ctx context.Context) error {
	tenants, err := store.TenantIDs(ctx, r.Client)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, t := range tenants {
		var rows []*ent.RateLimitCooldown
		err := store.InTenant(viewer.SystemContext(ctx, t), r.Client, func(ctx context.Context) error {
			c := ent.FromContext(ctx)
			if _, err := c.RateLimitCooldown.Delete().Where(ratelimitcooldown.UntilLT(now.Add(-keepOver))).Exec(ctx); err != nil {
				return err
			}
			var err error
			rows, err = c.RateLimitCooldown.Query().Where(ratelimitcooldown.UntilGT(now)).All(ctx)
			return err
		})
		if err != nil {
			return fmt.Errorf("cooldowns of %s: %w", t, err)
		}
		for _, row := range rows {
			ttl := time.Until(row.Until) + time.Second
			if err := cooldownScript.Run(ctx, r.Redis, []string{cooldownKey(t, row.Scope)}, row.Until.UnixMilli(), ttl.Milliseconds()).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Cooldowns lists the viewer's tenant's cooldowns not yet over, soonest
// end first.
func Cooldowns(ctx context.Context) ([]*ent.RateLimitCooldown, error) {
	c, err := store.Client(ctx)
	if err != nil {
		return nil, err
	}
	return c.RateLimitCooldown.Query().Where(ratelimitcooldown.UntilGT(time.Now())).
		Order(ent.Asc(ratelimitcooldown.FieldUntil)).All(ctx)
}
