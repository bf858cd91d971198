package bench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// ScenarioFairness is fair dispatch across tenants: one tenant's burst
// against another's runs started one at a time.
const ScenarioFairness = "fairness"

// goalFairnessRatio: tenant B's p99 under tenant A's burst, as a multiple of
// its p99 with A idle.
const goalFairnessRatio = 3

// fairness measures tenant B's 3-step runs, started one at a time, with
// tenant A idle and then while A's FairnessRuns runs (started at once)
// drain; each run from createdAt to finishedAt (the server's clock). It
// needs the second tenant (Target.OtherToken).
func (s *session) fairness(ctx context.Context) error {
	if s.t.OtherToken == "" {
		return errors.New("no second tenant (Target.OtherToken)")
	}
	b := newClient(s.t.APIURL, s.t.OtherToken)
	envB, err := b.environment(ctx, "development")
	if err != nil {
		return err
	}
	wfA, err := s.deploy(ctx, "fair-a", chainDefinition(3))
	if err != nil {
		return err
	}
	wfB, err := b.deploy(ctx, envB, fmt.Sprintf("bench-fair-b-%d", time.Now().UnixNano()%1e9), chainDefinition(3))
	if err != nil {
		return err
	}
	probe := func(label string) (Sample, error) {
		var out Sample
		for i := range s.o.Sizes.FairnessProbes + threeStepWarmUp {
			id, err := b.startRun(ctx, wfB, envB, map[string]any{"n": i})
			if err != nil {
				return nil, err
			}
			r, err := pollEnd(ctx, b, id, 2*time.Minute)
			if err != nil {
				return nil, err
			}
			if r.Status != "succeeded" {
				return nil, fmt.Errorf("tenant B's run %s %s: %s", id, r.Status, r.Error)
			}
			if i >= threeStepWarmUp {
				out = append(out, r.FinishedAt.Sub(r.CreatedAt))
			}
		}
		s.figure(ScenarioFairness, "tenant B, "+label+": createdAt->finishedAt p50", ms(out.Percentile(0.5)), "ms", nil)
		s.figure(ScenarioFairness, "tenant B, "+label+": createdAt->finishedAt p99", ms(out.Percentile(0.99)), "ms", nil)
		return out, nil
	}
	idle, err := probe("tenant A idle")
	if err != nil {
		return err
	}
	// Tenant A starts its runs at once (32 startRun calls in flight).
	n := s.o.Sizes.FairnessRuns
	ids := make([]string, n)
	began := time.Now()
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id, err := s.start(ctx, wfA, i)
			if err != nil {
				once.Do(func() { firstErr = err })
				return
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	s.figure(ScenarioFairness, fmt.Sprintf("tenant A: %d startRun calls", n), time.Since(began).Seconds(), "s", nil)
	loaded, err := probe(fmt.Sprintf("tenant A's %d runs draining", n))
	if err != nil {
		return err
	}
	// A's runs must all finish; how long they take is reported.
	left := ids
	for len(left) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := s.c.statuses(ctx, left)
		if err != nil {
			return err
		}
		var still []string
		for _, id := range left {
			if !m[id].terminal() {
				still = append(still, id)
			}
		}
		left = still
		if len(left) > 0 {
			time.Sleep(200 * time.Millisecond) // polling interval of the drain
		}
	}
	s.figure(ScenarioFairness, fmt.Sprintf("tenant A: %d runs, first startRun to last finished", n), time.Since(began).Seconds(), "s", nil)
	if p := idle.Percentile(0.99); p > 0 {
		s.figure(ScenarioFairness, "tenant B p99 under A's burst / with A idle", float64(loaded.Percentile(0.99))/float64(p), "x", atMost(goalFairnessRatio, "x"))
	}
	return nil
}

// pollEnd polls a run every 2 ms until it ends.
func pollEnd(ctx context.Context, c *client, id string, timeout time.Duration) (runStatus, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		m, err := c.statuses(ctx, []string{id})
		if err != nil {
			return runStatus{}, err
		}
		if r := m[id]; r.terminal() {
			return r, nil
		}
		select {
		case <-ctx.Done():
			return runStatus{}, ctx.Err()
		case <-time.After(2 * time.Millisecond): // polling interval
		}
	}
	return runStatus{}, fmt.Errorf("run %s did not end within %s", id, timeout)
}
