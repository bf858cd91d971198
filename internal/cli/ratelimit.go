package cli

import (
	"context"

	"github.com/sluicehq/sluice/internal/ratelimit"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/steps"
)

// rateLimited opens the rate limits' control plane and puts the limiter in
// front of x's calls (internal/ratelimit).
func (a *app) rateLimited(x *steps.Executor) *steps.Executor {
	a.rateLimits = ratelimit.NewService(a.redis)
	runs.SetMaxDeferral(a.cfg.RateLimitMaxWait)
	return x.WithLimiter(ratelimit.NewLimiter(ratelimit.LimiterOptions{
		Redis:           a.redis,
		Client:          a.client,
		Log:             a.log,
		Metrics:         ratelimit.NewMetrics(a.metrics.Registry),
		ConcurrencyPoll: a.cfg.RateLimitConcurrencyPoll,
	}))
}

// restoreCooldowns runs the cooldown restorer (a singleton) until ctx ends.
func (a *app) restoreCooldowns(ctx context.Context) {
	(&ratelimit.Restorer{Redis: a.redis, Client: a.client, Log: a.log, Interval: a.cfg.RateLimitRestoreInterval}).Run(ctx, a.db)
}
