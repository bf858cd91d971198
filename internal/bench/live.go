package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/eventtype"
)

// sRunEvents streams a run's events after afterSeq, then live ones.
const sRunEvents = `subscription($id: ID!, $after: Int) { runEvents(runID: $id, afterSeq: $after) { seq type stepID data at } }`

// liveEvent is one runEvents frame as received.
type liveEvent struct {
	Type     string
	StepID   string
	Data     any
	At       time.Time // when the engine recorded it (inside its transaction)
	Received time.Time
}

// live puts Subscribers websocket subscribers on one run (all on the one
// API process) and measures, for every event recorded after they were all
// listening, the time from the event's `at` to its frame reaching each
// subscriber. `at` is taken inside the transaction, before commit, so the
// figure includes the commit, the Redis pub/sub hop and the API's fan-out.
// The subscribers run in this process and share the machine with
// everything else.
//
// The run waits on LiveGates approvals in a row. They are decided one at a
// time, each once every subscriber has the previous decision's events: each
// decision is one commit (a few events) fanned out to every subscriber with
// nothing else in flight, which is what the target is about. The last
// decision releases LiveSteps chained transforms, whose commits follow each
// other within milliseconds: that burst is reported on its own.
func (s *session) live(ctx context.Context) error {
	gates, n := s.o.Sizes.LiveGates, s.o.Sizes.Subscribers
	wf, err := s.deploy(ctx, "live", gatedDefinition(gates, s.o.Sizes.LiveSteps))
	if err != nil {
		return err
	}
	runID, err := s.start(ctx, wf, 0)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	type gate struct {
		seen atomic.Int32 // subscribers that received its approval.requested
		id   atomic.Value // its approval id
	}
	gs := make([]gate, gates)
	var (
		done     sync.WaitGroup
		mu       sync.Mutex
		failures []error
		received [][]liveEvent
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(failures) > 0
	}
	dial := make(chan struct{}, 50) // bounded concurrent handshakes
	connected := time.Now()
	for range n {
		done.Add(1)
		go func() {
			defer done.Done()
			dial <- struct{}{}
			w, err := dialWS(ctx, s.t.APIURL, s.t.Token)
			<-dial
			if err != nil {
				fail(err)
				return
			}
			defer w.close()
			if err := w.subscribe(ctx, "e", sRunEvents, map[string]any{"id": runID, "after": 0}); err != nil {
				fail(err)
				return
			}
			evs, err := collectEvents(ctx, w, func(e liveEvent) {
				var g int
				if _, err := fmt.Sscanf(e.StepID, "gate%d", &g); err == nil && g >= 1 && g <= gates {
					gs[g-1].id.Store(str(e.Data, "approvalID"))
					gs[g-1].seen.Add(1)
				}
			})
			if err != nil {
				fail(err)
				return
			}
			mu.Lock()
			received = append(received, evs)
			mu.Unlock()
		}()
	}
	decided := make([]time.Time, gates)
	for g := range gates {
		for gs[g].seen.Load() < int32(n) {
			if failed() || ctx.Err() != nil {
				cancel()
				done.Wait()
				return fmt.Errorf("waiting for gate%d to reach every subscriber: %d failures, first: %v", g+1, len(failures), errors.Join(failures...))
			}
			time.Sleep(time.Millisecond)
		}
		if g == 0 {
			s.progress("  %d subscribers listening after %s", n, time.Since(connected).Round(time.Millisecond))
		}
		decided[g] = time.Now()
		if _, err := s.c.call(ctx, mApprove, map[string]any{"id": gs[g].id.Load().(string)}); err != nil {
			cancel()
			done.Wait()
			return err
		}
	}
	done.Wait()
	if len(failures) > 0 {
		return fmt.Errorf("%d of %d subscribers failed, first: %w", len(failures), n, failures[0])
	}
	var single, burst Sample
	for _, evs := range received {
		if len(evs) == 0 || evs[len(evs)-1].Type != string(eventtype.RunSucceeded) {
			return fmt.Errorf("a subscriber's stream did not end with run.succeeded (%d events)", len(evs))
		}
		for _, e := range evs {
			switch {
			case e.At.Before(decided[0]):
				// recorded before every subscriber was listening
			case gates > 1 && e.At.Before(decided[gates-1]):
				single = append(single, e.Received.Sub(e.At))
			default:
				burst = append(burst, e.Received.Sub(e.At))
			}
		}
	}
	if len(single) == 0 || len(burst) == 0 {
		return fmt.Errorf("no live event measured (%d single-commit frames, %d burst frames)", len(single), len(burst))
	}
	label := fmt.Sprintf("%d subscribers, one commit at a time (%d decisions): event at -> frame received", n, gates-1)
	s.figure(ScenarioLive, label+" p50", ms(single.Median()), "ms", nil)
	s.figure(ScenarioLive, label+" p99", ms(single.Percentile(0.99)), "ms", atMost(goalLiveP99Ms, "ms"))
	label = fmt.Sprintf("%d subscribers, burst of %d chained steps' commits: event at -> frame received", n, s.o.Sizes.LiveSteps)
	s.figure(ScenarioLive, label+" p50", ms(burst.Median()), "ms", nil)
	s.figure(ScenarioLive, label+" p99", ms(burst.Percentile(0.99)), "ms", nil)
	s.progress("  %d frames measured one commit at a time, %d in the burst", len(single), len(burst))
	return nil
}

// quotedApprovalRequested is how an approval.requested frame names its
// type, to spot one without decoding the frame.
var quotedApprovalRequested = strconv.Quote(string(eventtype.ApprovalRequested))

// collectEvents reads runEvents frames until the server completes the
// subscription. A frame is decoded at once only when it names an approval
// (handed to requested), the rest once the subscription ends, so that the
// subscribers, which share the machine with Sluice, spend as little as they
// can while frames arrive.
func collectEvents(ctx context.Context, w *wsConn, requested func(liveEvent)) ([]liveEvent, error) {
	var raw []frame
	for {
		f, err := w.nextRaw(ctx, "e")
		if err != nil {
			return nil, fmt.Errorf("runEvents after %d events: %w", len(raw), err)
		}
		if f.Type == "complete" {
			break
		}
		if requested != nil && strings.Contains(f.Raw, quotedApprovalRequested) {
			e, err := decodeEvent(f)
			if err != nil {
				return nil, err
			}
			requested(e)
		}
		raw = append(raw, f)
	}
	out := make([]liveEvent, 0, len(raw))
	for _, f := range raw {
		e, err := decodeEvent(f)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// decodeEvent reads a runEvents frame.
func decodeEvent(f frame) (liveEvent, error) {
	if err := f.decode("e"); err != nil {
		return liveEvent{}, err
	}
	at, err := time.Parse(time.RFC3339Nano, str(f.Data, "runEvents.at"))
	if err != nil {
		return liveEvent{}, fmt.Errorf("event at: %v (%.200s)", err, f.Raw)
	}
	return liveEvent{Type: str(f.Data, "runEvents.type"), StepID: str(f.Data, "runEvents.stepID"), Data: path(f.Data, "runEvents.data"), At: at, Received: f.Received}, nil
}
