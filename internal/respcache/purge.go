package respcache

import (
	"context"
	"database/sql"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// PurgeName is the singleton lock of the purge of expired entries.
const PurgeName = "respcache.purge"

// PurgeInterval is how often the purge runs.
const PurgeInterval = time.Minute

// Purge deletes, in every tenant, the entries past their staleIfError end
// (nothing may serve them any more) and leases whose fill never answered,
// that no caller is filling. It returns
// how many it deleted.
func (c *Cache) Purge(ctx context.Context) (int64, error) {
	tenants, err := store.TenantIDs(ctx, c.client)
	if err != nil {
		return 0, err
	}
	var total int64
	now := c.now()
	for _, t := range tenants {
		err := store.InTenant(viewer.SystemContext(ctx, t), c.client, func(ctx context.Context) error {
			q, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			tag, err := q.Exec(ctx, `DELETE FROM response_cache_entries WHERE tenant_id = $1
				AND (stale_until < $2 OR (status IS NULL AND updated_at < $2 - interval '1 hour'))
				AND (fill_until IS NULL OR fill_until < $2)`, t, now)
			if err != nil {
				return err
			}
			total += tag.RowsAffected()
			// The size cap: the least recently stored entries beyond it go.
			tag, err = q.Exec(ctx, `DELETE FROM response_cache_entries WHERE tenant_id = $1 AND id IN (
				SELECT id FROM response_cache_entries WHERE tenant_id = $1 ORDER BY updated_at DESC, id DESC OFFSET $2)`, t, c.maxEntries)
			total += tag.RowsAffected()
			return err
		})
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// RunPurger purges every PurgeInterval until ctx ends, one worker at a time
// (store.RunSingleton).
func (c *Cache) RunPurger(ctx context.Context, db *sql.DB, log *slog.Logger) {
	store.RunSingleton(ctx, db, PurgeName, log, func() time.Duration { return PurgeInterval }, func(ctx context.Context) error {
		_, err := c.Purge(ctx)
		return err
	})
}
