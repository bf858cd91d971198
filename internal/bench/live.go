package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// sRunEvents streams a run's events after afterSeq, then live ones.
const sRunEvents = `subscription($id: ID!, $after: Int) { runEvents(runID: $id, afterSeq: $after) { seq type stepID data at } }`

// liveEvent is one runEvents frame as received.
type liveEvent struct {
	Type     string
	Data     any
	At       time.Time // when the engine recorded it (inside its transaction)
	Received time.Time
}

// live puts Subscribers websocket subscribers on one run (all on the one
// API process) and measures, for every event recorded after they were all
// listening, the time from the event's `at` to its frame reaching each
// subscriber. The run waits on an approval while they connect; approving it
// releases LiveSteps transform steps whose events are the live ones. `at` is
// taken inside the transaction, before commit, so the figure includes the
// commit, the Redis pub/sub hop and the API's fan-out. The subscribers run
// in this process and share the machine with everything else.
func (s *session) live(ctx context.Context) error {
	wf, err := s.deploy(ctx, "live", gatedDefinition(s.o.Sizes.LiveSteps))
	if err != nil {
		return err
	}
	runID, err := s.start(ctx, wf, 0)
	if err != nil {
		return err
	}
	n := s.o.Sizes.Subscribers
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var (
		ready, done sync.WaitGroup
		mu          sync.Mutex
		approvalID  string
		failures    []error
		received    [][]liveEvent
	)
	dial := make(chan struct{}, 50) // bounded concurrent handshakes
	connected := time.Now()
	for i := range n {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			fail := func(err error) {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
			dial <- struct{}{}
			w, err := dialWS(ctx, s.t.APIURL, s.t.Token)
			<-dial
			if err != nil {
				ready.Done()
				fail(err)
				return
			}
			defer w.close()
			if err := w.subscribe(ctx, "e", sRunEvents, map[string]any{"id": runID, "after": 0}); err != nil {
				ready.Done()
				fail(err)
				return
			}
			backlog, err := collectEvents(ctx, w, func(ev []liveEvent) bool { return ev[len(ev)-1].Type == "approval.requested" })
			if err == nil && i == 0 {
				mu.Lock()
				approvalID = str(backlog[len(backlog)-1].Data, "approvalID")
				mu.Unlock()
			}
			ready.Done()
			if err != nil {
				fail(err)
				return
			}
			live, err := collectEvents(ctx, w, nil)
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			received = append(received, live)
			mu.Unlock()
		}()
	}
	ready.Wait()
	s.progress("  %d subscribers listening after %s", n, time.Since(connected).Round(time.Millisecond))
	if approvalID == "" {
		cancel()
		done.Wait()
		return fmt.Errorf("no approval.requested event reached the first subscriber (%d failures: %v)", len(failures), failures)
	}
	released := time.Now()
	if _, err := s.c.call(ctx, mApprove, map[string]any{"id": approvalID}); err != nil {
		cancel()
		done.Wait()
		return err
	}
	done.Wait()
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d subscribers failed, first: %w", len(failures), n, failures[0])
	}
	var lat Sample
	for _, live := range received {
		if len(live) == 0 || live[len(live)-1].Type != "run.succeeded" {
			return fmt.Errorf("a subscriber's stream did not end with run.succeeded (%d live events)", len(live))
		}
		for _, e := range live {
			if !e.At.Before(released) {
				lat = append(lat, e.Received.Sub(e.At))
			}
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("no live event measured")
	}
	label := fmt.Sprintf("%d subscribers: event at -> frame received", n)
	s.figure(ScenarioLive, label+" p50", ms(lat.Median()), "ms", nil)
	s.figure(ScenarioLive, label+" p99", ms(lat.Percentile(0.99)), "ms", atMost(goalLiveP99Ms, "ms"))
	s.progress("  %d frames measured", len(lat))
	return nil
}

// collectEvents reads runEvents frames until the server completes the
// subscription or stop (if given) returns true.
func collectEvents(ctx context.Context, w *wsConn, stop func([]liveEvent) bool) ([]liveEvent, error) {
	var out []liveEvent
	for {
		f, err := w.next(ctx, "e")
		if err != nil {
			return out, fmt.Errorf("runEvents after %d events: %w", len(out), err)
		}
		if f.Type == "complete" {
			return out, nil
		}
		at, err := time.Parse(time.RFC3339Nano, str(f.Data, "runEvents.at"))
		if err != nil {
			return out, fmt.Errorf("event at: %v (%.200s)", err, f.Raw)
		}
		out = append(out, liveEvent{Type: str(f.Data, "runEvents.type"), Data: path(f.Data, "runEvents.data"), At: at, Received: f.Received})
		if stop != nil && stop(out) {
			return out, nil
		}
	}
}
