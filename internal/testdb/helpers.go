package testdb

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/redisdb"
)

// Clock is an injectable clock that tests advance instead of waiting.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at t, truncated to microseconds (Postgres's
// precision).
func NewClock(t time.Time) *Clock { return &Clock{t: t.UTC().Truncate(time.Microsecond)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// RedisAddr is SLUICE_TEST_REDIS_ADDR, or the local Redis.
func RedisAddr() string {
	if a := os.Getenv("SLUICE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Redis reserves a Redis database (1-15) for the test (internal/redisdb),
// empty, and releases it at the end; owner names the reservation.
func Redis(t testing.TB, owner string) *redis.Client {
	t.Helper()
	until := time.Now().Add(2 * time.Minute)
	for {
		n, release, err := redisdb.Acquire(context.Background(), RedisAddr(), fmt.Sprintf("%s-%d", owner, os.Getpid()))
		if err == nil {
			rdb := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: n})
			t.Cleanup(func() { rdb.Close(); release() })
			return rdb
		}
		if time.Now().After(until) {
			t.Fatalf("redis at %s: %v", RedisAddr(), err)
		}
		time.Sleep(200 * time.Millisecond) // waiting for a reservation to free up, not asserting
	}
}
