package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"
)

// Singleton runs fn unless another process (or goroutine) is running the
// job called name, anywhere: it holds a session-level Postgres advisory lock
// while fn runs, and releases it after. A process that dies loses its
// connection, and with it the lock, so nothing stays held after a crash;
// the next caller takes over. ran is false when another holder had the
// lock (fn was not called).
//
// The locks of one pool are all held on one connection of that pool, kept
// for the purpose (see locker): a worker runs about ten singleton jobs, and
// a connection each, beside the ones their passes work on, would take a
// pool's worth of connections and could starve the passes themselves.
//
// Use it for sweeps, schedulers and purges that must run once at a time
// across workers. fn's work is in its own transactions; the lock only says
// who does it. db is the app role's pool (Open).
func Singleton(ctx context.Context, db *sql.DB, name string, fn func(ctx context.Context) error) (ran bool, err error) {
	l := lockerOf(db)
	key := SingletonKey(name)
	got, err := l.tryLock(ctx, db, key)
	if err != nil {
		return false, fmt.Errorf("singleton %s: lock: %w", name, err)
	}
	if !got {
		return false, nil
	}
	defer l.unlock(ctx, key)
	return true, fn(ctx)
}

// locker holds a pool's singleton locks on one connection of the pool.
// held keeps the keys this process holds, so that a second goroutine asking
// for a held job is told no (Postgres would grant a session its own lock
// again). If the connection fails, it is dropped with the locks on it (the
// server releases them) and the next lock opens another.
type locker struct {
	mu   sync.Mutex
	conn *sql.Conn
	held map[int64]bool
}

var lockers sync.Map // *sql.DB -> *locker

func lockerOf(db *sql.DB) *locker {
	l, _ := lockers.LoadOrStore(db, &locker{held: map[int64]bool{}})
	return l.(*locker)
}

func (l *locker) tryLock(ctx context.Context, db *sql.DB, key int64) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] {
		return false, nil
	}
	if l.conn == nil {
		c, err := db.Conn(ctx)
		if err != nil {
			return false, err
		}
		l.conn = c
	}
	var got bool
	if err := l.conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
		l.drop()
		return false, err
	}
	if got {
		l.held[key] = true
	}
	return got, nil
}

func (l *locker) unlock(ctx context.Context, key int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, key)
	if l.conn == nil {
		return // dropped while fn ran: the lock went with it
	}
	// Unlock even when ctx is done; if that fails, drop the connection so
	// that no lock stays held by a live process.
	var released bool
	if err := l.conn.QueryRowContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key).Scan(&released); err != nil || !released {
		l.drop()
	}
}

// drop closes the lock connection for good (it never goes back to the pool
// holding locks); the caller holds mu.
func (l *locker) drop() {
	_ = l.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = l.conn.Close()
	l.conn = nil
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
