package connections

import (
	"context"
	"database/sql"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/ent/credentialwait"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// SweepName is the singleton job of the refresh sweep.
const SweepName = "connections.sweep"

// sweepBatch bounds the connections one pass refreshes per tenant.
const sweepBatch = 100

// SweepReport says what a pass did.
type SweepReport struct {
	Tenants   int
	Refreshed int
	Failed    int
	Woken     int
}

// RunSweeper sweeps every SweepInterval until ctx ends, under the
// singleton lock: one worker at a time refreshes ahead of expiry.
func (s *Service) RunSweeper(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, SweepName, s.o.Log, func() time.Duration { return s.o.SweepInterval }, func(ctx context.Context) error {
		_, err := s.Sweep(ctx)
		return err
	})
}

// Sweep visits every tenant: it refreshes the connections whose
// next_refresh_at has passed (ahead of expiry, the daily keep-alive, a
// degraded connection's next try), and wakes the runs waiting for a
// connection that is active again (a wake-up lost with a crash). It does
// not take the singleton lock (RunSweeper does).
func (s *Service) Sweep(ctx context.Context) (SweepReport, error) {
	var rep SweepReport
	tenants, err := store.TenantIDsOf(ctx, s.o.Client, store.TenantsConnecting)
	if err != nil {
		return rep, err
	}
	return rep, store.EachTenant(ctx, tenants, func(tid string) error {
		rep.Tenants++
		return s.sweepTenant(ctx, tid, &rep)
	})
}

func (s *Service) sweepTenant(ctx context.Context, tenantID string, rep *SweepReport) error {
	tctx := viewer.SystemContext(ctx, tenantID)
	var due []*ent.Connection
	var waitingFor []string
	now := s.o.Now()
	err := store.InTenant(tctx, s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		var err error
		due, err = c.Connection.Query().
			Where(connection.NextRefreshAtLTE(now), connection.StatusIn(connection.StatusActive, connection.StatusDegraded)).
			Order(ent.Asc(connection.FieldNextRefreshAt)).Limit(sweepBatch).
			Select(connection.FieldID, connection.FieldCredentialID, connection.FieldTokenVersion).All(ctx)
		if err != nil {
			return err
		}
		// Waits whose connection is usable again.
		creds, err := c.CredentialWait.Query().Where(credentialwait.StatusEQ(credentialwait.StatusWaiting)).
			GroupBy(credentialwait.FieldCredentialID).Strings(ctx)
		if err != nil || len(creds) == 0 {
			return err
		}
		waitingFor, err = c.Connection.Query().Where(connection.CredentialIDIn(creds...), connection.StatusIn(connection.StatusActive, connection.StatusDegraded)).
			Select(connection.FieldCredentialID).Strings(ctx)
		return err
	})
	if err != nil {
		return err
	}
	for _, row := range due {
		if _, err := s.refresh(ctx, tenantID, row.CredentialID, row.TokenVersion, "", true); err != nil {
			rep.Failed++
			continue
		}
		rep.Refreshed++
	}
	if s.waker != nil {
		for _, credID := range waitingFor {
			n, err := s.waker.WakeCredentialWaits(ctx, tenantID, credID)
			if err != nil {
				return err
			}
			rep.Woken += n
		}
	}
	return nil
}
