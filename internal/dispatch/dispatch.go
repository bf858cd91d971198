// Package dispatch releases the steps fair dispatch holds in Postgres
// (internal/runs/dispatch.go decides what is held, in the state machine's
// transactions). A worker's Releaser runs the releases: at once for a tenant
// whose step transaction saw held steps (a step taken from the queue or
// finished makes room), coalesced so that a busy tenant has at most one
// release in flight per worker, and on a sweep over every tenant with held
// steps as a safety net (after a crash, a Redis wipe or a change of a plan),
// which also releases runs waiting for a workflow's concurrency key or for
// the tenant's cap on runs that a finishing run did not release
// (runs.Service.ReleaseKeys, ReleaseRuns), and steps held
// for a named concurrency limit whose release was lost or found the
// limit's lock taken (runs.Service.ReleaseLimits; ReleaseLimits asks for
// one at once).
// Nothing here decides what runs: the release itself is one SQL function,
// serialised per tenant in Postgres, so any number of workers may run it.
package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Store is what the Releaser needs of the run state machine.
type Store interface {
	// ReleaseHeld releases what fits of the tenant's held steps and sends
	// them; it returns how many.
	ReleaseHeld(ctx context.Context, tenantID string) (int, error)
	// HeldTenants lists the tenants with held steps.
	HeldTenants(ctx context.Context) ([]string, error)
	// ReleaseKeys releases the runs waiting for a workflow's concurrency
	// key that fit under its limit (a finishing run releases them itself;
	// this recovers those it could not); it returns how many steps.
	ReleaseKeys(ctx context.Context, tenantID string) (int, error)
	// ReleaseRuns releases the runs waiting for the tenant's cap on
	// unfinished runs (plan.maxConcurrentRuns) that fit under it (a
	// finishing run releases them itself; this recovers those it could
	// not, and applies a raised or removed cap); it returns how many steps.
	ReleaseRuns(ctx context.Context, tenantID string) (int, error)
	// ReleaseLimits releases the steps held for the tenant's named
	// concurrency limits that fit under them (a step leaving a limit
	// releases them itself; this recovers those it could not); it returns
	// how many.
	ReleaseLimits(ctx context.Context, tenantID string) (int, error)
}

// Releaser runs releases for tenants that asked (Release) and sweeps.
type Releaser struct {
	store Store
	log   *slog.Logger
	sweep time.Duration

	mu sync.Mutex
	// pending and running are keyed by release kind and tenant: asked
	// for since the last release began, and a release in flight.
	pending, running map[releaseKey]bool
	sem              chan struct{} // bounds releases in flight across tenants

	// now and pause are the clock and the wait of the pacing after a
	// release that found no room (loop); tests replace them.
	now   func() time.Time
	pause func(time.Duration)
}

// New returns a Releaser that sweeps every sweep (if zero, a second).
func New(s Store, log *slog.Logger, sweep time.Duration) *Releaser {
	if sweep <= 0 {
		sweep = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &Releaser{store: s, log: log, sweep: sweep, pending: map[releaseKey]bool{}, running: map[releaseKey]bool{},
		sem: make(chan struct{}, 4), now: time.Now, pause: time.Sleep}
}

// releaseKey is one kind of release of one tenant.
type releaseKey struct {
	limits bool // named limits (ReleaseLimits), else fair dispatch's held steps
	tenant string
}

// Release asks for a release of the tenant's held steps. It never blocks:
// a tenant with a release in flight gets one more after it, whatever the
// number of asks in between.
func (r *Releaser) Release(tenantID string) { r.ask(releaseKey{tenant: tenantID}) }

// ReleaseLimits asks for a release of the steps held for the tenant's
// named limits (a step left a limit whose lock was taken). It never
// blocks, and coalesces like Release.
func (r *Releaser) ReleaseLimits(tenantID string) { r.ask(releaseKey{limits: true, tenant: tenantID}) }

func (r *Releaser) ask(k releaseKey) {
	r.mu.Lock()
	if r.running[k] {
		r.pending[k] = true
		r.mu.Unlock()
		return
	}
	r.running[k] = true
	r.mu.Unlock()
	go r.loop(k)
}

// loop runs one kind of release for one tenant until no ask is pending.
//
// Fair dispatch's releases are paced: a release of held steps that
// released nothing (the tenant's queued steps still fill more than half its
// share, or nothing is held) is followed by a pause as long as it took
// before the next one, and the asks that arrive meanwhile make that one
// release. Under a tenant's burst nearly every step transaction asks, and
// without the pause most releases would find the queue still too full:
// each is a transaction for nothing. The pause scales with the machine (a
// release's own time), so the queue, which still holds half a share when a
// release declines, does not run dry waiting for it.
func (r *Releaser) loop(k releaseKey) {
	for {
		r.sem <- struct{}{}
		var n int
		var err error
		start := r.now()
		if k.limits {
			n, err = r.store.ReleaseLimits(context.Background(), k.tenant)
		} else {
			n, err = r.store.ReleaseHeld(context.Background(), k.tenant)
		}
		took := r.now().Sub(start)
		<-r.sem
		if err != nil {
			r.log.Warn("release held steps", "tenant_id", k.tenant, "named_limits", k.limits, "err", err)
		}
		if err == nil && n == 0 && !k.limits && took > 0 {
			r.pause(min(took, maxPause))
		}
		r.mu.Lock()
		again := r.pending[k]
		delete(r.pending, k)
		if !again {
			delete(r.running, k)
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

// maxPause bounds the pacing pause after a release that found no room.
const maxPause = 50 * time.Millisecond

// Run sweeps until ctx ends: every tenant with held steps gets a release.
func (r *Releaser) Run(ctx context.Context) {
	t := time.NewTicker(r.sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("dispatch sweep", "err", err)
		}
	}
}

// SweepOnce asks for a release of every tenant with held steps and
// returns once the releases it started have ended.
func (r *Releaser) SweepOnce(ctx context.Context) error {
	ids, err := r.store.HeldTenants(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		r.sem <- struct{}{}
		_, err := r.store.ReleaseHeld(ctx, id)
		_, kerr := r.store.ReleaseKeys(ctx, id)
		// After the keys: a key's release may hold its runs for the
		// tenant's cap instead.
		_, rerr := r.store.ReleaseRuns(ctx, id)
		_, lerr := r.store.ReleaseLimits(ctx, id)
		<-r.sem
		if err != nil {
			r.log.Warn("release held steps", "tenant_id", id, "err", err)
		}
		if kerr != nil {
			r.log.Warn("release concurrency keys", "tenant_id", id, "err", kerr)
		}
		if rerr != nil {
			r.log.Warn("release runs waiting for the tenant's cap", "tenant_id", id, "err", rerr)
		}
		if lerr != nil {
			r.log.Warn("release named limits", "tenant_id", id, "err", lerr)
		}
	}
	return nil
}
