// Package respcache owns the response cache of http steps with a `cache`
// policy: entries in Postgres (response_cache_entries, tenant rows under
// RLS) keyed by a hash of tenant, credential id and version, method, URL
// and request body; a fill lease per key so one caller at a time calls
// upstream while the others wait for its answer; and the purge of expired
// entries, a singleton across workers (purge.go).
//
// Postgres rather than Redis: entries are tenant data and get RLS like any
// other; a Redis wipe (which Sluice survives everywhere else) does not
// turn into a burst of upstream calls; the lease and the entry are one row,
// so a waiter sees the answer the moment it commits; and the purge is a
// durable singleton like the other sweeps. A hit costs one indexed read.
package respcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// MaxEntryBytes is the largest response body the cache keeps; a larger
// response is served but not stored.
const MaxEntryBytes = 1 << 20

// MaxEntriesPerTenant caps a tenant's entries: the purge deletes the least
// recently stored beyond it (up to a minute late, PurgeInterval).
const MaxEntriesPerTenant = 10000

// Cache is the response cache. It is safe for concurrent use.
type Cache struct {
	client *ent.Client
	now    func() time.Time
	// poll is the first pause of a caller waiting for another's fill; it
	// doubles up to maxPoll.
	poll, maxPoll time.Duration
	maxEntries    int // MaxEntriesPerTenant; tests lower it
}

// New returns a cache on client (the app role's pool, store.NewClient).
func New(client *ent.Client) *Cache {
	return &Cache{client: client, now: func() time.Time { return time.Now().UTC() }, poll: 10 * time.Millisecond, maxPoll: 200 * time.Millisecond, maxEntries: MaxEntriesPerTenant}
}

// Binding is the cache as one step attempt sees it: its tenant, and the
// credential whose id and current version go into the key.
type Binding struct {
	c                         *Cache
	tenantID                  string
	environmentID, credential string // credential name; empty if the step has none
}

// For binds the cache to a run's tenant and a step's credential (by name
// in the run's environment).
func (c *Cache) For(tenantID, environmentID, credential string) *Binding {
	return &Binding{c: c, tenantID: tenantID, environmentID: environmentID, credential: credential}
}

// entry is a stored row as Do reads it.
type entry struct {
	status               *int
	header               http.Header
	body                 []byte
	freshUntil, staleEnd *time.Time
	fillUntil            *time.Time
}

func (e *entry) response() *steps.CachedResponse {
	if e == nil || e.status == nil {
		return nil
	}
	return &steps.CachedResponse{Status: *e.status, Header: e.header, Body: e.body}
}

// Do implements steps.ResponseCache.
func (b *Binding) Do(ctx context.Context, r steps.CacheRequest, fill steps.CacheFill) (*steps.CachedResponse, steps.CacheState, error) {
	ctx = viewer.SystemContext(ctx, b.tenantID)
	key, err := b.key(ctx, r)
	if err != nil {
		return nil, "", err
	}
	token := ids.New("fill")
	waitUntil := b.c.now().Add(r.Lease + time.Second)
	pause := b.c.poll
	for {
		now := b.c.now()
		cur, leased, err := b.lookupOrLease(ctx, key, token, now, r.Lease)
		if err != nil {
			return nil, "", err
		}
		if cur != nil && cur.status != nil && cur.freshUntil != nil && now.Before(*cur.freshUntil) {
			return cur.response(), steps.CacheHit, nil
		}
		if leased || now.After(waitUntil) {
			// This caller fills: with the lease, or, when the wait is over
			// and the holder never answered, without it.
			return b.fill(ctx, key, token, leased, r, cur, fill)
		}
		select {
		case <-ctx.Done():
			return nil, "", ctx.Err()
		case <-time.After(pause):
		}
		pause = min(pause*2, b.c.maxPoll)
	}
}

// fill calls upstream, stores a success, and on a transient failure
// serves the stale entry when it is within staleIfError.
func (b *Binding) fill(ctx context.Context, key, token string, leased bool, r steps.CacheRequest, cur *entry, fill steps.CacheFill) (*steps.CachedResponse, steps.CacheState, error) {
	resp, transient := fill(ctx)
	now := b.c.now()
	if resp != nil && len(resp.Body) <= MaxEntryBytes {
		err := b.store(ctx, key, resp, now, r)
		if err == nil || !leased {
			return nil, steps.CacheMiss, err
		}
		// Not stored: free the key for the next caller rather than make
		// it wait out the lease.
	}
	if leased {
		// The lease goes whatever happened to the call, even on a
		// cancelled context; a crash leaves it to expire (Lease).
		err := store.InTenant(context.WithoutCancel(ctx), b.c.client, func(ctx context.Context) error {
			q, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			_, err = q.Exec(ctx, `UPDATE response_cache_entries SET fill_token = NULL, fill_until = NULL
				WHERE tenant_id = $1 AND cache_key = $2 AND fill_token = $3`, b.tenantID, key, token)
			return err
		})
		if err != nil {
			return nil, steps.CacheMiss, err
		}
	}
	if transient && cur != nil && cur.status != nil && cur.staleEnd != nil && now.Before(*cur.staleEnd) {
		return cur.response(), steps.CacheStale, nil
	}
	return nil, steps.CacheMiss, nil
}

// store writes a fresh response and ends the lease, whoever holds it: a
// later fill is no fresher than this one.
func (b *Binding) store(ctx context.Context, key string, resp *steps.CachedResponse, now time.Time, r steps.CacheRequest) error {
	hdr, err := json.Marshal(resp.Header)
	if err != nil {
		return err
	}
	fresh := now.Add(r.Policy.TTL.Duration)
	stale := fresh.Add(r.Policy.StaleIfError.Duration)
	return store.InTenant(context.WithoutCancel(ctx), b.c.client, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		_, err = q.Exec(ctx, `INSERT INTO response_cache_entries
				(id, tenant_id, cache_key, created_at, updated_at, status, headers, body, stored_at, fresh_until, stale_until)
			VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $4, $8, $9)
			ON CONFLICT (tenant_id, cache_key) DO UPDATE SET updated_at = $4, status = $5, headers = $6, body = $7,
				stored_at = $4, fresh_until = $8, stale_until = $9, fill_token = NULL, fill_until = NULL`,
			ids.New(ids.ResponseCacheEntry), b.tenantID, key, now, resp.Status, hdr, resp.Body, fresh, stale)
		return err
	})
}

// lookupOrLease reads the key's entry and, unless it is fresh or another
// caller's lease is running, takes the lease, in one transaction.
func (b *Binding) lookupOrLease(ctx context.Context, key, token string, now time.Time, lease time.Duration) (*entry, bool, error) {
	var cur *entry
	leased := false
	err := store.InTenant(ctx, b.c.client, func(ctx context.Context) error {
		cur, leased = nil, false
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		e := &entry{}
		var hdr []byte
		err = q.QueryRow(ctx, `SELECT status, headers, body, fresh_until, stale_until, fill_until FROM response_cache_entries
			WHERE tenant_id = $1 AND cache_key = $2`, b.tenantID, key).
			Scan(&e.status, &hdr, &e.body, &e.freshUntil, &e.staleEnd, &e.fillUntil)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			if len(hdr) > 0 {
				_ = json.Unmarshal(hdr, &e.header)
			}
			cur = e
			if e.status != nil && e.freshUntil != nil && now.Before(*e.freshUntil) {
				return nil // a hit
			}
			if e.fillUntil != nil && now.Before(*e.fillUntil) {
				return nil // another caller is filling
			}
		}
		tag, err := q.Exec(ctx, `INSERT INTO response_cache_entries (id, tenant_id, cache_key, created_at, updated_at, fill_token, fill_until)
			VALUES ($1, $2, $3, $4, $4, $5, $6)
			ON CONFLICT (tenant_id, cache_key) DO UPDATE SET updated_at = $4, fill_token = $5, fill_until = $6
			WHERE (response_cache_entries.fresh_until IS NULL OR response_cache_entries.fresh_until <= $4)
			  AND (response_cache_entries.fill_until IS NULL OR response_cache_entries.fill_until <= $4)`,
			ids.New(ids.ResponseCacheEntry), b.tenantID, key, now, token, now.Add(lease))
		if err != nil {
			return err
		}
		leased = tag.RowsAffected() == 1
		return nil
	})
	return cur, leased, err
}

// key hashes tenant, credential (id and current version: a rotated or
// another credential never shares an entry), method, URL and body.
func (b *Binding) key(ctx context.Context, r steps.CacheRequest) (string, error) {
	credID, version := "", 0
	if b.credential != "" {
		err := store.InTenant(ctx, b.c.client, func(ctx context.Context) error {
			q, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			return q.QueryRow(ctx, `SELECT id, current_version FROM credentials
				WHERE tenant_id = $1 AND environment_id = $2 AND name = $3`, b.tenantID, b.environmentID, b.credential).
				Scan(&credID, &version)
		})
		if err != nil {
			return "", fmt.Errorf("cache key credential: %w", err)
		}
	}
	h := sha256.New()
	for _, part := range []string{b.tenantID, credID, strconv.Itoa(version), r.Method, r.URL, r.BodySHA256} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
