package bench

import (
	"context"
	"sync"
	"time"
)

// sRunEnded streams the tenant's runs as they reach a final status.
const sRunEnded = `subscription($w: RunWhereInput) { runUpdated(where: $w) { id status } }`

// ending is how and when a run ended, as the benchmark learned it.
type ending struct {
	status string
	at     time.Time // when the client learned it
}

// watcher tells callers when runs end. With live set, a runUpdated
// subscription reports endings the way a client waiting for a result learns
// them (the API reads the run once per status change for it); a poll of the
// statuses of awaited runs is the safety net (the server drops a subscriber
// that falls behind, and the benchmark must still finish) and, without
// live, the only source.
type watcher struct {
	c         *client
	pollEvery time.Duration
	ws        *wsConn

	mu      sync.Mutex
	ended   map[string]ending
	waiters map[string]chan ending

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func watch(ctx context.Context, c *client, apiURL string, live bool, pollEvery time.Duration) (*watcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{c: c, pollEvery: pollEvery, ended: map[string]ending{}, waiters: map[string]chan ending{}, cancel: cancel}
	if live {
		ws, err := dialWS(ctx, apiURL, c.token)
		if err != nil {
			cancel()
			return nil, err
		}
		where := map[string]any{"statusIn": []string{"succeeded", "failed", "cancelled"}}
		if err := ws.subscribe(ctx, "ended", sRunEnded, map[string]any{"w": where}); err != nil {
			ws.close()
			cancel()
			return nil, err
		}
		w.ws = ws
		w.wg.Add(1)
		go w.listen(ctx)
	}
	w.wg.Add(1)
	go w.poll(ctx)
	return w, nil
}

// close stops the subscription and the poll.
func (w *watcher) close() {
	w.cancel()
	if w.ws != nil {
		w.ws.close()
	}
	w.wg.Wait()
}

func (w *watcher) listen(ctx context.Context) {
	defer w.wg.Done()
	for {
		f, err := w.ws.next(ctx, "ended")
		if err != nil || f.Type != "next" {
			return // the poll carries on alone
		}
		w.record(str(f.Data, "runUpdated.id"), ending{status: str(f.Data, "runUpdated.status"), at: f.Received})
	}
}

func (w *watcher) poll(ctx context.Context) {
	defer w.wg.Done()
	t := time.NewTicker(w.pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.waiters))
		for id := range w.waiters {
			ids = append(ids, id)
		}
		w.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		m, err := w.c.statuses(ctx, ids)
		if err != nil {
			continue // the next tick tries again; callers have deadlines
		}
		now := time.Now()
		for id, r := range m {
			if r.terminal() {
				w.record(id, ending{status: r.Status, at: now})
			}
		}
	}
}

// record notes the first report of a run's end.
func (w *watcher) record(id string, e ending) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.waiters[id]; ok {
		delete(w.waiters, id)
		ch <- e
		return
	}
	if _, seen := w.ended[id]; !seen {
		w.ended[id] = e
	}
}

// wait returns how run id ended, waiting for it at most until ctx ends.
func (w *watcher) wait(ctx context.Context, id string) (ending, error) {
	return w.await(ctx, w.expect(id), id)
}

// expect registers interest in run id's end, so the poll asks about it
// from now on; await then collects it. Expecting a batch of runs before
// awaiting any polls them together.
func (w *watcher) expect(id string) chan ending {
	ch := make(chan ending, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.ended[id]; ok {
		delete(w.ended, id)
		ch <- e
		return ch
	}
	w.waiters[id] = ch
	return ch
}

func (w *watcher) await(ctx context.Context, ch chan ending, id string) (ending, error) {
	select {
	case e := <-ch:
		return e, nil
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.waiters, id)
		w.mu.Unlock()
		return ending{}, ctx.Err()
	}
}
