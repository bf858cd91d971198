package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// While one holder runs the job, nobody else does; after it returns, the
// next caller runs it; a holder whose connection dies (a crashed process)
// leaves nothing held.
func TestSingleton(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	name := fmt.Sprintf("store-test-%d", os.Getpid())
	var inner bool
	ran, err := Singleton(ctx, f.db, name, func(ctx context.Context) error {
		// Another process asking now is told no, and its fn never runs.
		other, err := Singleton(ctx, f.db, name, func(context.Context) error {
			inner = true
			return nil
		})
		if err != nil {
			return err
		}
		if other {
			t.Error("a second holder ran while the first held the job")
		}
		return nil
	})
	if err != nil || !ran {
		t.Fatalf("first holder: ran %v, err %v", ran, err)
	}
	if inner {
		t.Fatal("the second holder's fn ran")
	}
	ran, err = Singleton(ctx, f.db, name, func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Fatalf("after release: ran %v, err %v", ran, err)
	}

	// A holder dies with the lock held: its backend is terminated from
	// outside, as when its process is killed (and waited for: the lock is
	// released when the backend has exited, not when it is signalled).
	ran, err = Singleton(ctx, f.db, name, func(ctx context.Context) error {
		var killed int
		err := f.db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_locks
			WHERE locktype = 'advisory' AND granted AND ((classid::bigint << 32) | objid::bigint) = $1`, SingletonKey(name)).Scan(&killed)
		if killed != 1 {
			t.Errorf("terminated %d holders of the lock, want 1", killed)
		}
		return err
	})
	if !ran {
		t.Fatalf("holder that dies: ran %v, err %v", ran, err)
	}
	ran, err = Singleton(ctx, f.db, name, func(context.Context) error { return nil })
	if err != nil || !ran {
		t.Fatalf("after the holder died: ran %v, err %v", ran, err)
	}
}

// Two workers run the same job again and again: passes never overlap,
// both loops end when their context does.
func TestRunSingleton(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	name := fmt.Sprintf("store-run-test-%d", os.Getpid())
	var running, passes atomic.Int32
	var overlap atomic.Bool
	pass := func(context.Context) error {
		if running.Add(1) > 1 {
			overlap.Store(true)
		}
		defer running.Add(-1)
		if passes.Add(1) >= 20 {
			cancel()
		}
		return nil
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			RunSingleton(ctx, f.db, name, slog.Default(), func() time.Duration { return time.Millisecond }, pass)
		}()
	}
	wg.Wait()
	if overlap.Load() || passes.Load() < 20 {
		t.Fatalf("overlap %v, passes %d", overlap.Load(), passes.Load())
	}
}
