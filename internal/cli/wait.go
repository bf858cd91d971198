package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/internal/backoff"
	"github.com/sluicehq/sluice/internal/store"
)

// startupBackoff spaces the checks of a dependency that is down at start:
// from 250ms, doubling, at most 5s apart, with equal jitter.
var startupBackoff = backoff.Exponential{Initial: 250 * time.Millisecond, Max: 5 * time.Second, Coefficient: 2}

// waitFor runs check until it succeeds, ctx ends, or it fails with an error
// that is not about reaching the dependency (bad credentials, a wrong role:
// waiting would not fix those). A `serve` or `worker` started while Postgres
// or Redis is down (a deploy racing a database restart) waits, logging each
// wait, instead of exiting.
func waitFor(ctx context.Context, log *slog.Logger, what string, check func(context.Context) error) error {
	for attempt := 1; ; attempt++ {
		err := check(ctx)
		if err == nil {
			if attempt > 1 {
				log.Info(what+" is reachable", "attempts", attempt)
			}
			return nil
		}
		if !store.Unavailable(err) {
			return err
		}
		d := startupBackoff.Delay(attempt, nil)
		log.Warn("waiting for "+what, "attempt", attempt, "retry_in", d.String(), "err", err.Error())
		select {
		case <-ctx.Done():
			return err
		case <-time.After(d):
		}
	}
}
