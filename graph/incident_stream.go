package graph

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
)

// subscribeIncidents streams the tenant's incidents as they change
// (incidentUpdated). Incident notices travel on the tenant's channel with
// the incident id where a run's would be (events.RedisPublisher.
// PublishIncident); each is read back from Postgres, so the subscriber
// sees the committed incident.
func subscribeIncidents(ctx context.Context) (<-chan *ent.Incident, error) {
	op, v, err := liveSubscriber(ctx)
	if err != nil {
		return nil, err
	}
	sub := op.live.Hub.SubscribeTenant(v.TenantID)
	out := make(chan *ent.Incident)
	go func() {
		defer close(out)
		defer sub.Close()
		lease := auth.LeaseFrom(ctx)
		for {
			var n *events.Notice
			select {
			case <-ctx.Done():
				return
			case <-lease.Done():
				op.credentialEnded(ctx)
				return
			case m, ok := <-sub.C():
				if !ok {
					op.endIfDropped(ctx, sub, -1)
					return
				}
				n = m
			}
			if n.Resync || ids.Prefix(n.RunID) != ids.Incident {
				continue
			}
			var inc *ent.Incident
			err := store.InTenant(ctx, op.live.Client, func(ctx context.Context) error {
				var err error
				inc, err = ent.FromContext(ctx).Incident.Query().Where(incident.ID(n.RunID)).Only(ctx)
				if ent.IsNotFound(err) {
					inc, err = nil, nil
				}
				return err
			})
			if err != nil {
				if ctx.Err() == nil {
					op.endWith(op.present(ctx, fmt.Errorf("load incident %s: %w", n.RunID, err)))
				}
				return
			}
			if inc == nil {
				continue
			}
			select {
			case out <- inc:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}
