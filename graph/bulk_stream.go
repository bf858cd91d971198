package graph

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/bulk"
	"github.com/sluicehq/sluice/internal/events"
)

// subscribeBulkOperation streams one bulk operation each time it changes
// (bulkOperationUpdated), starting with its current state, and ends after
// it finishes. Notices travel on the tenant's channel with the operation
// id where a run's would be (cli.bulkPublisher); each is read back from
// Postgres, so the subscriber sees the committed progress. An id of
// another tenant answers as a missing one (NOT_FOUND).
func subscribeBulkOperation(ctx context.Context, id string) (<-chan *ent.BulkOperation, error) {
	op, v, err := liveSubscriber(ctx)
	if err != nil {
		return nil, err
	}
	load := func() (*ent.BulkOperation, error) { return bulk.Load(ctx, op.live.Client, id) }
	sub := op.live.Hub.SubscribeTenant(v.TenantID)
	first, err := load()
	if err != nil {
		sub.Close()
		return nil, err
	}
	out := make(chan *ent.BulkOperation, 1)
	out <- first
	open := func(b *ent.BulkOperation) bool {
		return b.Status == bulkoperation.StatusQueued || b.Status == bulkoperation.StatusRunning
	}
	go func() {
		defer close(out)
		defer sub.Close()
		if !open(first) {
			return
		}
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
			if !n.Resync && n.RunID != id {
				continue
			}
			b, err := load()
			if err != nil {
				if ctx.Err() == nil {
					op.endWith(op.present(ctx, fmt.Errorf("load bulk operation %s: %w", id, err)))
				}
				return
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
			if !open(b) {
				return
			}
		}
	}()
	return out, nil
}

// runOrNil is the run with id, or nil when there is none (or id is nil):
// a bulk operation's item outlives a run that retention removed.
func runOrNil(ctx context.Context, id *string) (*ent.Run, error) {
	if id == nil {
		return nil, nil
	}
	c, err := client(ctx)
	if err != nil {
		return nil, err
	}
	r, err := c.Run.Get(ctx, *id)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return r, err
}
