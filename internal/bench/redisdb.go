package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
)

// AcquireRedisDB reserves a Redis database number (1-15) on addr and
// flushes it, so a benchmark never shares queues with another run of it or
// with the e2e suite. The reservation is the e2e suite's: a key in database
// 0 (sluice:e2e:redis-db:<n>) that expires after an hour; release flushes
// the database and deletes the key.
func AcquireRedisDB(ctx context.Context, addr string) (int, func(), error) {
	r0 := redis.NewClient(&redis.Options{Addr: addr})
	defer r0.Close()
	for n := 1; n <= 15; n++ {
		key := fmt.Sprintf("sluice:e2e:redis-db:%d", n)
		ok, err := r0.SetNX(ctx, key, fmt.Sprintf("bench-%d", os.Getpid()), time.Hour).Result()
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
