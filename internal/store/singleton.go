package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"
)

// Singleton runs fn unless another process (or goroutine) is running the
// job called name, anywhere: it holds a session-level Postgres advisory lock
// on a connection of its own while fn runs, and releases it after. A
// process that dies loses its connection, and with it the lock, so nothing
// stays held after a crash; the next caller takes over. ran is false when
// another holder had the lock (fn was not called).
//
// Use it for sweeps, schedulers and purges that must run once at a time
// across workers. fn's work is in its own transactions; the lock only says
// who does it. db is the app role's pool (Open).
func Singleton(ctx context.Context, db *sql.DB, name string, fn func(ctx context.Context) error) (ran bool, err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return false, fmt.Errorf("singleton %s: %w", name, err)
	}
	defer conn.Close()
	key := SingletonKey(name)
	var got bool
	if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
		return false, fmt.Errorf("singleton %s: lock: %w", name, err)
	}
	if !got {
		return false, nil
	}
	defer func() {
		// Unlock even when ctx is done; if that fails, drop the connection
		// so the pool never hands out one that holds the lock.
		var released bool
		uerr := conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key).Scan(&released)
		if uerr != nil || !released {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	return true, fn(ctx)
}

// SingletonKey is the advisory lock key of the job called name: a 64-bit
// FNV-1a hash under the "sluice:" namespace, stable across releases.
func SingletonKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("sluice:" + name))
	return int64(h.Sum64())
}

// RunSingleton runs fn as the job called name (Singleton) again and again
// until ctx ends, pausing wait() after each pass (asked after the pass, so
// it may depend on what the pass found). While another process holds the
// job, a pass does nothing. fn's errors are logged, never returned: the
// next pass tries again.
func RunSingleton(ctx context.Context, db *sql.DB, name string, log *slog.Logger, wait func() time.Duration, fn func(ctx context.Context) error) {
	for {
		if _, err := Singleton(ctx, db, name, fn); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "singleton job", "job", name, "err", err)
		}
		t := time.NewTimer(wait())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
