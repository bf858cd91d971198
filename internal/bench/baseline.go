package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// baselineQueue is the only queue the baseline uses.
const baselineQueue = "bench"

// baseline measures raw asynq on a Redis database of its own: n no-op tasks
// enqueued by servers×concurrency callers while `servers` asynq servers of
// `concurrency` each process them, polling as Sluice's workers do. It
// returns tasks/s from the first enqueue to the last task processed. Tasks
// carry a task id, as Sluice's do, so enqueue runs the same uniqueness check.
func baseline(ctx context.Context, addr string, db, servers, concurrency, n int) (float64, error) {
	admin := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	defer admin.Close()
	if err := admin.FlushDB(ctx).Err(); err != nil {
		return 0, fmt.Errorf("baseline redis: %w", err)
	}
	defer admin.FlushDB(context.WithoutCancel(ctx))

	var processed atomic.Int64
	var target atomic.Int64
	reached := make(chan struct{}, 1)
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench.noop", func(context.Context, *asynq.Task) error {
		if processed.Add(1) == target.Load() {
			reached <- struct{}{}
		}
		return nil
	})
	var srvs []*asynq.Server
	var conns []*redis.Client
	defer func() {
		// Servers first: a server whose connection closes under it panics.
		for _, s := range srvs {
			s.Shutdown()
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	for range servers {
		rdb := redis.NewClient(&redis.Options{Addr: addr, DB: db})
		conns = append(conns, rdb)
		s := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency: concurrency,
			Queues:      map[string]int{baselineQueue: 1},
			// As internal/worker configures Sluice's workers.
			TaskCheckInterval:        20 * time.Millisecond,
			DelayedTaskCheckInterval: 250 * time.Millisecond,
			Logger:                   nopLogger{},
			LogLevel:                 asynq.ErrorLevel,
		})
		if err := s.Start(mux); err != nil {
			return 0, fmt.Errorf("baseline asynq server: %w", err)
		}
		srvs = append(srvs, s)
	}
	producer := asynq.NewClientFromRedisClient(admin)

	round := func(prefix string, count int) (time.Duration, error) {
		processed.Store(0)
		target.Store(int64(count))
		var next atomic.Int64
		var firstErr error
		var once sync.Once
		var wg sync.WaitGroup
		begin := time.Now()
		for range servers * concurrency {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := next.Add(1)
					if i > int64(count) {
						return
					}
					t := asynq.NewTask("bench.noop", nil, asynq.TaskID(fmt.Sprintf("%s-%d", prefix, i)), asynq.Queue(baselineQueue))
					if _, err := producer.EnqueueContext(ctx, t); err != nil {
						once.Do(func() { firstErr = err })
						return
					}
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return 0, fmt.Errorf("baseline enqueue: %w", firstErr)
		}
		select {
		case <-reached:
			return time.Since(begin), nil
		case <-time.After(2 * time.Minute):
			return 0, fmt.Errorf("baseline: %d of %d tasks processed after 2m", processed.Load(), count)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	// Warm up connections and the servers' pollers first.
	if _, err := round("warm", min(n, 200)); err != nil {
		return 0, err
	}
	took, err := round("run", n)
	if err != nil {
		return 0, err
	}
	return float64(n) / took.Seconds(), nil
}

// nopLogger silences asynq.
type nopLogger struct{}

func (nopLogger) Debug(...any) {}
func (nopLogger) Info(...any)  {}
func (nopLogger) Warn(...any)  {}
func (nopLogger) Error(...any) {}
func (nopLogger) Fatal(...any) {}
