// Benchmarks of the run engine through the real binary, the suite's two API
// processes and two workers. `go test` runs benchmarks only when asked, so
// `make test` never runs these; run them with:
//
//	go test ./e2e -run '^$' -bench . [-benchtime 200x]

package e2e

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

// benchEnv is one tenant shared by every benchmark of a `go test` process:
// creating a tenant costs a CLI call, too much to repeat for each b.N.
var benchEnv struct {
	once  sync.Once
	err   error
	tok   string
	envID string
	wfs   map[string]string // definition name -> workflow id
	mu    sync.Mutex
}

// benchWorkflow returns a caller on API process 0 and the id of a workflow
// deployed with def (deployed once per name).
func benchWorkflow(b *testing.B, name string, def map[string]any) (*client, string, string) {
	b.Helper()
	benchEnv.once.Do(func() {
		benchEnv.tok, benchEnv.envID, benchEnv.err = benchTenant(b, "bench")
		benchEnv.wfs = map[string]string{}
	})
	if benchEnv.err != nil {
		b.Fatal(benchEnv.err)
	}
	g := newClient(b, 0, benchEnv.tok)
	benchEnv.mu.Lock()
	defer benchEnv.mu.Unlock()
	wf, ok := benchEnv.wfs[name]
	if !ok {
		var err error
		if wf, err = g.deployDef(benchEnv.envID, name+"-"+randHex(3), def); err != nil {
			b.Fatal(err)
		}
		benchEnv.wfs[name] = wf
	}
	return g, wf, benchEnv.envID
}

// chainDefinition is n transform steps, each needing the one before.
func chainDefinition(n int) map[string]any {
	list := []any{map[string]any{"id": "s1", "type": "transform", "output": map[string]any{"v": "input.n"}}}
	for i := 2; i <= n; i++ {
		list = append(list, map[string]any{"id": fmt.Sprintf("s%d", i), "type": "transform", "needs": []any{fmt.Sprintf("s%d", i-1)},
			"output": map[string]any{"v": fmt.Sprintf("steps.s%d.output.v", i-1), "name": fmt.Sprintf("'s%d'", i)}})
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps":         list,
		"output":        fmt.Sprintf("steps.s%d.output.v", n),
	}
}

// runBatch starts n runs of wf with `workers` concurrent callers and waits
// until all are terminal; every run must succeed.
func runBatch(b *testing.B, g *client, wf, envID string, n, workers int) []string {
	b.Helper()
	ids, err := g.startRuns(wf, envID, n, workers, 0, func(i int) map[string]any { return map[string]any{"n": i} }, nil)
	if err != nil {
		b.Fatal(err)
	}
	statuses, err := g.waitTerminal(ids, 5*time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	for _, id := range ids {
		if statuses[id] != "succeeded" {
			b.Fatalf("run %s is %q", id, statuses[id])
		}
	}
	return ids
}

// runClosedLoop runs n runs of wf with `workers` callers, each starting a
// run and waiting for it to end before starting the next, so that at most
// `workers` runs are in flight; every run must succeed.
func runClosedLoop(b *testing.B, g *client, wf, envID string, n, workers int) []string {
	b.Helper()
	ids := make([]string, n)
	errc := make(chan error, workers)
	var next sync.Mutex
	i := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				k := i
				i++
				next.Unlock()
				if k >= n {
					return
				}
				d, err := g.tryOK(mStartRun, map[string]any{"w": wf, "e": envID, "i": map[string]any{"n": k}})
				if err != nil {
					errc <- err
					return
				}
				id := str(d, "startRun.id")
				ids[k] = id
				// Every 10ms: the poll interval bounds the latency measured.
				var st string
				err = poll(time.Minute, 10*time.Millisecond, func() (bool, string) {
					m, err := g.statuses([]string{id})
					if err != nil {
						return false, err.Error()
					}
					st = m[id]
					return isTerminal(st), fmt.Sprintf("run %s is %s", id, st)
				})
				if err == nil && st != "succeeded" {
					err = fmt.Errorf("run %s is %s", id, st)
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	return ids
}

const qRunTimes = `query($ids: [ID!]!) { nodes(ids: $ids) { ... on Run { id createdAt finishedAt } } }`

// lastFinish returns the latest finishedAt of the runs.
func lastFinish(g *client, ids []string) (time.Time, error) {
	var last time.Time
	for start := 0; start < len(ids); start += 100 {
		d, err := g.tryOK(qRunTimes, map[string]any{"ids": ids[start:min(start+100, len(ids))]})
		if err != nil {
			return last, err
		}
		list, _ := d["nodes"].([]any)
		for _, n := range list {
			at, err := time.Parse(time.RFC3339Nano, str(n, "finishedAt"))
			if err != nil {
				return last, fmt.Errorf("finishedAt of %v: %w", n, err)
			}
			if at.After(last) {
				last = at
			}
		}
	}
	return last, nil
}

// BenchmarkTransformRuns measures end-to-end throughput of 3-step transform
// runs: b.N runs started by 20 concurrent callers, from the first start to
// the last run's finishedAt.
func BenchmarkTransformRuns(b *testing.B) {
	g, wf, envID := benchWorkflow(b, "bench-transform", chainDefinition(3))
	b.ResetTimer()
	begin := time.Now()
	ids := runBatch(b, g, wf, envID, b.N, 20)
	b.StopTimer()
	last, err := lastFinish(g, ids)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/last.Sub(begin).Seconds(), "runs/s")
}

// BenchmarkStepDispatch measures how long a step waits for its turn: from
// the previous step's step.succeeded event to the next step's step.started
// event, over b.N runs of a 5-step chain (4 hand-offs each), reported as p50
// and p99 in milliseconds. At most 2 runs are in flight, so this is the
// engine's hand-off latency, not time spent queued behind other runs.
func BenchmarkStepDispatch(b *testing.B) {
	const steps = 5
	g, wf, envID := benchWorkflow(b, "bench-dispatch", chainDefinition(steps))
	b.ResetTimer()
	ids := runClosedLoop(b, g, wf, envID, b.N, 2)
	b.StopTimer()
	details, err := g.runDetails(ids)
	if err != nil {
		b.Fatal(err)
	}
	var lat []float64
	for _, id := range ids {
		run := details[id]
		at := func(typ, step string) time.Time {
			ev := eventsOf(run, typ, step)
			if len(ev) != 1 {
				b.Fatalf("run %s: %d %s events for %s", id, len(ev), typ, step)
			}
			t, err := time.Parse(time.RFC3339Nano, str(ev[0], "at"))
			if err != nil {
				b.Fatalf("run %s: event at: %v", id, err)
			}
			return t
		}
		for i := 2; i <= steps; i++ {
			d := at("step.started", fmt.Sprintf("s%d", i)).Sub(at("step.succeeded", fmt.Sprintf("s%d", i-1)))
			lat = append(lat, float64(d.Microseconds())/1000)
		}
	}
	sort.Float64s(lat)
	pct := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
