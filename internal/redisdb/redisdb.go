// Package redisdb reserves one of a Redis server's numbered databases (1-15)
// for one user at a time: the e2e suite's process stacks, `sluice bench`, and
// package tests that need a database of their own.
package redisdb

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Acquire reserves a Redis database number (1-15) on addr and flushes it, so
// its holder never shares queues with another test run or benchmark. The
// reservation is a key in database 0 (sluice:e2e:redis-db:<n>, owner names
// the holder) that expires after an hour; release flushes the database and
// deletes the key.
func Acquire(ctx context.Context, addr, owner string) (int, func(), error) {
	r0 := redis.NewClient(&redis.Options{Addr: addr})
	defer r0.Close()
	for n := 1; n <= 15; n++ {
		key := fmt.Sprintf("sluice:e2e:redis-db:%d", n)
		ok, err := r0.SetNX(ctx, key, owner, time.Hour).Result()
		if err != nil {
			return 0, nil, fmt.Errorf("redis at %s: %w", addr, err)
		}
		if !ok {
			continue
		}
		db := redis.NewClient(&redis.Options{Addr: addr, DB: n})
		err = db.FlushDB(ctx).Err()
		db.Close()
		if err != nil {
			return 0, nil, err
		}
		release := func() {
			ctx := context.Background()
			db := redis.NewClient(&redis.Options{Addr: addr, DB: n})
			db.FlushDB(ctx)
			db.Close()
			r := redis.NewClient(&redis.Options{Addr: addr})
			defer r.Close()
			r.Del(ctx, key)
		}
		return n, release, nil
	}
	return 0, nil, fmt.Errorf("no free Redis database (1-15) on %s", addr)
}
