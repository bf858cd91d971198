package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// The suite waits on signals, never for a fixed time: every wait polls an
// observable state (GraphQL, Postgres, Redis, a fake server's record, a
// process's log) through poll or eventually, with a generous deadline
// because the suite runs on a busy 2-core machine. To show that something
// did NOT happen, a test first reaches a point after which it would have
// happened (the run is terminal, the run's queue tasks have been handled,
// a marker has gone through the same path) and then asserts on recorded
// state.

// pollEvery is how often eventually looks again: soon enough that a wait
// ends shortly after its signal, rarely enough not to load the machine.
const pollEvery = 50 * time.Millisecond

// poll calls cond every `every` until it reports done or timeout passes.
// It returns nil once done, else an error carrying cond's last note. It
// never fails a test, so goroutines and benchmarks use it.
func poll(timeout, every time.Duration, cond func() (done bool, note string)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, note := cond()
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s; last: %s", timeout, note)
		}
		time.Sleep(every) // the polling interval, not a wait for an outcome
	}
}

// eventually polls cond until it reports done and fails t, with cond's last
// note, if timeout passes first. Call it on the test's goroutine.
func eventually(t testing.TB, timeout time.Duration, cond func() (done bool, note string)) {
	t.Helper()
	if err := poll(timeout, pollEvery, cond); err != nil {
		t.Fatal(err)
	}
}

// suiteRedis is a client on the Redis database of the suite's processes.
func suiteRedis(t testing.TB) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: suite.redisDB})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// queueTasksOf lists the ids of the tasks on queue (pending, active,
// scheduled or waiting for a retry) whose payload names runID.
func queueTasksOf(insp *asynq.Inspector, queue, runID string) ([]string, error) {
	lists := []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		insp.ListPendingTasks, insp.ListActiveTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
	}
	var ids []string
	for _, list := range lists {
		for page := 1; ; page++ {
			tasks, err := list(queue, asynq.PageSize(500), asynq.Page(page))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				break
			}
			if err != nil {
				return nil, err
			}
			for _, ti := range tasks {
				var p struct {
					RunID string `json:"runID"`
				}
				if json.Unmarshal(ti.Payload, &p) == nil && p.RunID == runID {
					ids = append(ids, ti.ID)
				}
			}
			if len(tasks) < 500 {
				break
			}
		}
	}
	return ids, nil
}

// waitQueueHandled waits until rdb's queue holds no task naming runID:
// every wake-up of the run sent there has been handled (asynq keeps a task
// active until its handler returns), so whatever a handler would have done
// is recorded by now.
func waitQueueHandled(t testing.TB, rdb *redis.Client, queue, runID string) {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	eventually(t, 60*time.Second, func() (bool, string) {
		ids, err := queueTasksOf(insp, queue, runID)
		if err != nil {
			return false, err.Error()
		}
		return len(ids) == 0, fmt.Sprintf("%s tasks of run %s still queued: %v", queue, runID, ids)
	})
}
