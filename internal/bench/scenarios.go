package bench

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/internal/eventtype"
)

// Targets Sluice holds itself to (see BENCHMARKS.md).
const (
	goalStepsVsAsynqPct = 40 // steps/s as a % of raw asynq tasks/s
	goalChainStepMs     = 10 // overhead per sequential step
	goalThreeStepP50Ms  = 20
	goalThreeStepP99Ms  = 75
	goalFanOutSeconds   = 2 // 1,000 parallel steps
	goalStartP99Ms      = 15
	goalLiveP99Ms       = 50
	goalHandOffCommits  = 3 // chain hand-off p50 as a multiple of a one-row commit p50
)

// baseline measures raw asynq at the workers' total concurrency.
func (s *session) baseline(ctx context.Context) error {
	workers, conc := max(s.t.Workers, 1), max(s.t.Concurrency, 1)
	rate, err := baseline(ctx, s.t.RedisAddr, s.t.BaselineDB, workers, conc, s.o.Sizes.BaselineTasks)
	if err != nil {
		return err
	}
	s.asynqRate = rate
	s.figure(ScenarioBaseline, fmt.Sprintf("asynq no-op, %d server(s) x %d", workers, conc), rate, "tasks/s", nil)
	_, err = s.commits(ctx)
	return err
}

// threeStep measures a 3-step transform workflow: the latency of one run at
// a time, then throughput with InFlight runs in flight.
func (s *session) threeStep(ctx context.Context) error {
	wf, err := s.deploy(ctx, "three-step", chainDefinition(3))
	if err != nil {
		return err
	}
	s.threeStepWF = wf
	if err := s.latency(ctx, wf); err != nil {
		return err
	}
	return s.throughput(ctx, wf)
}

// threeStepWarmUp is the runs before the timed sequential ones (connections,
// caches, the subscription settling); the DBOS peer warms up as many.
const threeStepWarmUp = 3

// latency starts LatencyRuns runs one after the other and times each from
// just before startRun is sent to the runUpdated frame saying it succeeded.
func (s *session) latency(ctx context.Context, wf string) error {
	w, err := watch(ctx, s.c, s.t.APIURL, true, 250*time.Millisecond)
	if err != nil {
		return err
	}
	defer w.close()
	const warmUp = threeStepWarmUp
	var client, engine Sample
	var ids []string
	var wire wireMark
	for i := range warmUp + s.o.Sizes.LatencyRuns {
		if i == warmUp {
			if wire, err = s.markWire(ctx); err != nil {
				return err
			}
		}
		begin := time.Now()
		id, err := s.start(ctx, wf, i)
		if err != nil {
			return err
		}
		e, err := waitEnd(ctx, w, id, 30*time.Second)
		if err != nil {
			return err
		}
		if i < warmUp {
			continue
		}
		client = append(client, e.at.Sub(begin))
		ids = append(ids, id)
	}
	if err := s.reportWire(ctx, ScenarioThreeStep, fmt.Sprintf("%d sequential runs", len(ids)), wire, 3*len(ids)); err != nil {
		return err
	}
	m, err := s.c.statuses(ctx, ids)
	if err != nil {
		return err
	}
	for _, id := range ids {
		engine = append(engine, m[id].FinishedAt.Sub(m[id].CreatedAt))
	}
	name := fmt.Sprintf("latency startRun->succeeded (%d sequential runs)", len(client))
	s.figure(ScenarioThreeStep, name+" p50", ms(client.Median()), "ms", atMost(goalThreeStepP50Ms, "ms"))
	s.figure(ScenarioThreeStep, name+" p95", ms(client.Percentile(0.95)), "ms", nil)
	s.figure(ScenarioThreeStep, name+" p99", ms(client.Percentile(0.99)), "ms", atMost(goalThreeStepP99Ms, "ms"))
	s.threeStepServerP50 = engine.Median()
	s.figure(ScenarioThreeStep, "latency createdAt->finishedAt (server clock) p50", ms(s.threeStepServerP50), "ms", nil)
	return s.firstPickup(ctx, ids)
}

// pickupSample is how many of the sequential runs' event logs are read to
// split the server-clock latency.
const pickupSample = 20

// firstPickup splits the server-clock latency of the first sequential runs
// by their event logs: run.queued (in startRun's transaction) to the first
// step's step.started (the claim of the worker that picked it up: commit,
// enqueue, wake-up, the worker's claim), and that step.started to the run's
// end.
func (s *session) firstPickup(ctx context.Context, ids []string) error {
	var pickup, rest Sample
	for _, id := range ids[:min(len(ids), pickupSample)] {
		evs, err := s.c.events(ctx, id)
		if err != nil {
			return err
		}
		var queued, started, ended time.Time
		for _, e := range evs {
			switch {
			case e.Type == string(eventtype.RunQueued):
				queued = e.At
			case e.Type == string(eventtype.StepStarted) && started.IsZero():
				started = e.At
			case e.Type == string(eventtype.RunSucceeded):
				ended = e.At
			}
		}
		if queued.IsZero() || started.IsZero() || ended.IsZero() {
			return fmt.Errorf("run %s: no run.queued, step.started or run.succeeded in its events", id)
		}
		pickup, rest = append(pickup, started.Sub(queued)), append(rest, ended.Sub(started))
	}
	n := fmt.Sprintf("(%d runs)", len(pickup))
	s.figure(ScenarioThreeStep, "server clock split: run.queued -> first step.started p50 "+n, ms(pickup.Median()), "ms", nil)
	s.figure(ScenarioThreeStep, "server clock split: first step.started -> run.succeeded p50 "+n, ms(rest.Median()), "ms", nil)
	return nil
}

// waitEnd waits for a run to end and requires that it succeeded.
func waitEnd(ctx context.Context, w *watcher, id string, timeout time.Duration) (ending, error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	e, err := w.wait(wctx, id)
	if err != nil {
		return e, fmt.Errorf("run %s did not end within %s: %w", id, timeout, err)
	}
	if e.status != "succeeded" {
		return e, fmt.Errorf("run %s %s", id, e.status)
	}
	return e, nil
}

// throughput keeps InFlight runs in flight (a run starts as soon as another
// ends) until ThroughputRuns have run, and reports the sustained rate from
// the runs' finishedAt. Endings are polled, so the waiting costs the API a
// few queries a second rather than a read per status change.
func (s *session) throughput(ctx context.Context, wf string) error {
	w, err := watch(ctx, s.c, s.t.APIURL, false, 100*time.Millisecond)
	if err != nil {
		return err
	}
	defer w.close()
	n := s.o.Sizes.ThroughputRuns
	groups, err := s.markWire(ctx)
	if err != nil {
		return err
	}
	ids := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	slots, stop := context.WithCancel(ctx) // the first failure stops every slot
	defer stop()
	for range min(s.o.Sizes.InFlight, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || slots.Err() != nil {
					return
				}
				id, err := s.start(slots, wf, i)
				if err == nil {
					_, err = waitEnd(slots, w, id, 5*time.Minute)
				}
				if err != nil {
					once.Do(func() { firstErr = err; stop() })
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	m, err := s.c.statuses(ctx, ids)
	if err != nil {
		return err
	}
	finished := make([]time.Time, 0, n)
	for _, id := range ids {
		finished = append(finished, m[id].FinishedAt)
	}
	runs := steadyRate(finished)
	s.threeStepRunsPerS = runs
	steps := 3 * runs
	label := fmt.Sprintf("throughput, %d runs in flight", s.o.Sizes.InFlight)
	s.figure(ScenarioThreeStep, label, runs, "runs/s", nil)
	s.figure(ScenarioThreeStep, label, steps, "steps/s", nil)
	if s.asynqRate > 0 {
		s.figure(ScenarioThreeStep, "steps/s vs raw asynq tasks/s", 100*steps/s.asynqRate, "%", atLeast(goalStepsVsAsynqPct, "%"))
	}
	if err := s.reportWire(ctx, ScenarioThreeStep, label, groups, 3*n); err != nil {
		return err
	}
	return s.reportGroups(ctx, ScenarioThreeStep, label, groups, 3*n)
}

// chains runs each chain length: the run's duration divided by its steps is
// the overhead per sequential step (the steps themselves do nothing).
func (s *session) chains(ctx context.Context) error {
	for _, n := range s.o.Sizes.Chains {
		wf, err := s.deploy(ctx, fmt.Sprintf("chain-%d", n), chainDefinition(n))
		if err != nil {
			return err
		}
		w, err := watch(ctx, s.c, s.t.APIURL, true, 250*time.Millisecond)
		if err != nil {
			return err
		}
		reps := 3
		if n > 100 {
			reps = 1
		}
		var per, handOff, inStep Sample
		wire, err := s.markWire(ctx)
		if err != nil {
			w.close()
			return err
		}
		for i := range reps {
			begin := time.Now()
			id, err := s.start(ctx, wf, i)
			if err == nil {
				var e ending
				e, err = waitEnd(ctx, w, id, max(time.Minute, time.Duration(n)*500*time.Millisecond))
				per = append(per, e.at.Sub(begin)/time.Duration(n))
			}
			var h, in Sample
			if err == nil {
				h, in, err = s.stepTimes(ctx, id)
				handOff, inStep = append(handOff, h...), append(inStep, in...)
			}
			if err != nil {
				w.close()
				return err
			}
		}
		w.close()
		if err := s.reportWire(ctx, ScenarioChain, fmt.Sprintf("%d sequential steps x %d runs", n, reps), wire, n*reps); err != nil {
			return err
		}
		label := fmt.Sprintf("%d sequential steps: ", n)
		of := "1 run"
		if reps > 1 {
			of = fmt.Sprintf("median of %d runs", reps)
		}
		s.figure(ScenarioChain, label+"overhead per step ("+of+")", ms(per.Median()), "ms", atMost(goalChainStepMs, "ms"))
		s.figure(ScenarioChain, label+"hand-off step.succeeded -> next step.started p50", ms(handOff.Median()), "ms", nil)
		commit, err := s.commits(ctx)
		if err != nil {
			return err
		}
		if commit > 0 {
			s.figure(ScenarioChain, label+"hand-off p50 vs one-row commit p50", float64(handOff.Median())/float64(commit), "x",
				&Goal{Value: goalHandOffCommits, AtMost: true, Text: "<= " + trim(goalHandOffCommits) + " x"})
		}
		s.figure(ScenarioChain, label+"in step step.started -> step.succeeded p50", ms(inStep.Median()), "ms", nil)
	}
	return nil
}

// stepTimes splits a chain run's time by its event log (server clock): the
// hand-offs, from a step's step.succeeded (its result transaction) to the
// next step's step.started (the claim transaction of the worker that picked
// its task up), which is queue time; and the steps, from step.started to
// step.succeeded, which is claim, execution and the start of the result
// transaction.
func (s *session) stepTimes(ctx context.Context, runID string) (handOff, inStep Sample, err error) {
	evs, err := s.c.events(ctx, runID)
	if err != nil {
		return nil, nil, err
	}
	started, succeeded := map[string]time.Time{}, map[string]time.Time{}
	for _, e := range evs {
		switch e.Type {
		case string(eventtype.StepStarted):
			started[e.StepID] = e.At
		case string(eventtype.StepSucceeded):
			succeeded[e.StepID] = e.At
		}
	}
	for i := 1; ; i++ {
		id := fmt.Sprintf("s%d", i)
		st, ok1 := started[id]
		su, ok2 := succeeded[id]
		if !ok1 || !ok2 {
			break
		}
		inStep = append(inStep, su.Sub(st))
		if next, ok := started[fmt.Sprintf("s%d", i+1)]; ok {
			handOff = append(handOff, next.Sub(su))
		}
	}
	if len(inStep) == 0 {
		return nil, nil, fmt.Errorf("run %s: no step.started/step.succeeded events", runID)
	}
	return handOff, inStep, nil
}

// fanOut times one run of FanOut parallel steps, startRun to succeeded.
// Definitions have a step cap; when FanOut is over it, the figure is
// reported as not expressible and the largest fan-out allowed is timed
// instead.
func (s *session) fanOut(ctx context.Context) error {
	n := s.o.Sizes.FanOut
	name := func(n int) string { return fmt.Sprintf("%d parallel steps: time to finish", n) }
	wf, err := s.deploy(ctx, fmt.Sprintf("fan-out-%d", n), fanOutDefinition(n))
	if limit, ok := stepCap(err); ok && limit < n {
		s.figure(ScenarioFanOut, name(n)+fmt.Sprintf(" (not expressible: a definition holds at most %d steps)", limit), math.NaN(), "s", atMost(goalFanOutSeconds, "s"))
		n = limit
		wf, err = s.deploy(ctx, fmt.Sprintf("fan-out-%d", n), fanOutDefinition(n))
	}
	if err != nil {
		return err
	}
	w, err := watch(ctx, s.c, s.t.APIURL, true, 250*time.Millisecond)
	if err != nil {
		return err
	}
	defer w.close()
	begin := time.Now()
	id, err := s.start(ctx, wf, 1)
	if err != nil {
		return err
	}
	started := time.Since(begin)
	e, err := waitEnd(ctx, w, id, 15*time.Minute)
	if err != nil {
		return err
	}
	var goal *Goal
	if n == s.o.Sizes.FanOut {
		goal = atMost(goalFanOutSeconds, "s")
	}
	s.figure(ScenarioFanOut, name(n), e.at.Sub(begin).Seconds(), "s", goal)
	s.figure(ScenarioFanOut, fmt.Sprintf("%d parallel steps: startRun call", n), ms(started), "ms", nil)
	return s.mapOfTransforms(ctx, w)
}

// mapOfTransforms times one run of a map step over FanOut items with a
// transform inner step, startRun to succeeded: the items are evaluated in
// the map step's claim, all at once.
func (s *session) mapOfTransforms(ctx context.Context, w *watcher) error {
	n := s.o.Sizes.FanOut
	wf, err := s.deploy(ctx, fmt.Sprintf("map-%d", n), mapDefinition(n))
	if err != nil {
		return err
	}
	begin := time.Now()
	id, err := s.start(ctx, wf, 1)
	if err != nil {
		return err
	}
	e, err := waitEnd(ctx, w, id, 15*time.Minute)
	if err != nil {
		return err
	}
	s.figure(ScenarioFanOut, fmt.Sprintf("map of %d transforms: time to finish", n), e.at.Sub(begin).Seconds(), "s", atMost(goalFanOutSeconds, "s"))
	return nil
}

// stepCapPattern finds the step cap in the VALIDATION error of a definition
// with too many steps ("$.steps: maxItems: got 1,000, want 500").
var stepCapPattern = regexp.MustCompile(`steps: maxItems: got [0-9,]+, want ([0-9,]+)`)

// stepCap reports the cap on steps when err is that error.
func stepCap(err error) (int, bool) {
	if err == nil {
		return 0, false
	}
	m := stepCapPattern.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, false
	}
	n, convErr := strconv.Atoi(strings.ReplaceAll(m[1], ",", ""))
	return n, convErr == nil && n > 0
}

// startRate calls startRun StartRate times a second for StartFor, each call
// at its scheduled time whatever the previous ones are doing (an open loop:
// a slow answer does not slow the arrivals), and reports the calls'
// latency. The runs (3-step) execute meanwhile, as they would in service;
// all must succeed.
func (s *session) startRate(ctx context.Context) error {
	wf := s.threeStepWF
	if wf == "" {
		var err error
		if wf, err = s.deploy(ctx, "three-step", chainDefinition(3)); err != nil {
			return err
		}
		s.threeStepWF = wf
	}
	rate := s.o.Sizes.StartRate
	total := max(1, int(float64(rate)*s.o.Sizes.StartFor.Seconds()))
	every := time.Second / time.Duration(rate)
	lat := make(Sample, total)
	ids := make([]string, total)
	errs := make([]error, total)
	var wg sync.WaitGroup
	begin := time.Now()
	for i := range total {
		if d := time.Until(begin.Add(time.Duration(i) * every)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			ids[i], errs[i] = s.start(ctx, wf, i)
			lat[i] = time.Since(t0)
		}()
	}
	sent := time.Since(begin)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	achieved := float64(total) / sent.Seconds()
	if total > 1 {
		achieved = float64(total-1) / sent.Seconds()
	}
	label := fmt.Sprintf("startRun at %d/s for %s (%d calls)", rate, s.o.Sizes.StartFor, total)
	s.figure(ScenarioStart, label+" p50", ms(lat.Median()), "ms", nil)
	s.figure(ScenarioStart, label+" p99", ms(lat.Percentile(0.99)), "ms", atMost(goalStartP99Ms, "ms"))
	s.figure(ScenarioStart, "rate achieved", achieved, "calls/s", nil)
	// Let the runs finish before the next scenario, and check them.
	w, err := watch(ctx, s.c, s.t.APIURL, false, 250*time.Millisecond)
	if err != nil {
		return err
	}
	defer w.close()
	drain := time.Now()
	chans := make([]chan ending, len(ids))
	for i, id := range ids {
		chans[i] = w.expect(id)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i, id := range ids {
		e, err := w.await(dctx, chans[i], id)
		if err != nil {
			return fmt.Errorf("run %s did not end within 5m: %w", id, err)
		}
		if e.status != "succeeded" {
			return fmt.Errorf("run %s %s", id, e.status)
		}
	}
	s.progress("  %d runs drained %s after the last start", total, time.Since(drain).Round(time.Millisecond))
	return nil
}
