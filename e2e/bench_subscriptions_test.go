package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
)

// BenchmarkSubscriptionLatency puts 1,000 websocket subscribers on one run
// (all on one API process) and measures, for every event committed after
// they were all listening, the time from the event's `at` to the frame
// arriving at each client, and the API process's memory per subscriber.
// The run waits on an approval while subscribers connect; approving it
// releases five transform steps whose events are the live ones measured.
// One subscriber alone is the baseline. Clients, API, workers, Postgres and
// Redis share the machine, so the figures include their contention.
func BenchmarkSubscriptionLatency(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) { benchSubscribers(b, n) })
	}
}

func benchSubscribers(b *testing.B, subscribers int) {
	// An API process of its own: its memory figures must not include the
	// benchmark's clients (the suite's servers run in this process).
	p, err := startServeProcess(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.stop)
	tenantID := liveBenchTenant(b)
	owner := auth.Claims{Subject: "bench-owner@e2e.test", TenantID: tenantID, Roles: []string{"owner"}}
	tok, err := auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience, owner, 2*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	g := (&client{t: b, token: tok}).on(p)
	env := ""
	for _, e := range edges(g.ok(qEnvironments, nil), "environments") {
		if e["name"] == "development" {
			env = e["id"].(string)
		}
	}
	def := subChainDefinition(5)
	steps := def["steps"].([]any)
	steps[0].(map[string]any)["needs"] = []any{"gate"}
	def["steps"] = append([]any{map[string]any{"id": "gate", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": "1h"}}, steps...)
	slug := fmt.Sprintf("bench-live-%d", subscribers)
	wf := str(g.ok(mCreateWF, map[string]any{"n": slug, "s": slug}), "createWorkflow.id")
	v := str(g.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
	g.ok(mPublish, map[string]any{"id": v})
	g.ok(mDeploy, map[string]any{"v": v, "e": env})

	var latencies []time.Duration
	var rssPerSub, heapPerSub, goroutinesPerSub float64
	b.ResetTimer()
	for range b.N {
		runID := str(g.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{}}), "startRun.id")
		before := liveScrapeMetrics(b, p)

		var (
			ready, done sync.WaitGroup
			mu          sync.Mutex
			approvalID  string
			failures    []error
			received    [][]subEvent
		)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		dial := make(chan struct{}, 50) // bounded concurrent handshakes
		for i := range subscribers {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				dial <- struct{}{}
				w, err := openWS(b, p, wsBearer(tok))
				<-dial
				if err == nil {
					err = w.write(ctx, subscribeMsg("e", sRunEvents, map[string]any{"id": runID, "after": 0}))
				}
				var backlog []subEvent
				if err == nil {
					backlog, err = w.collect(ctx, "e", func(ev []subEvent) bool { return ev[len(ev)-1].Type == "approval.requested" })
				}
				if err == nil && i == 0 {
					mu.Lock()
					approvalID = str(backlog[len(backlog)-1].Data, "approvalID")
					mu.Unlock()
				}
				ready.Done()
				var live []subEvent
				if err == nil {
					live, err = w.collect(ctx, "e", nil)
				}
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failures = append(failures, err)
					return
				}
				received = append(received, live)
			}()
		}
		ready.Wait()
		after := liveScrapeMetrics(b, p)
		if n := after["sluice_active_subscriptions"] - before["sluice_active_subscriptions"]; len(failures) == 0 && n != float64(subscribers) {
			b.Fatalf("sluice_active_subscriptions rose by %v, want %d", n, subscribers)
		}
		if approvalID == "" {
			cancel()
			b.Fatalf("no approval.requested event (%d failures: %v)", len(failures), failures)
		}
		released := time.Now()
		g.ok(`mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id status } }`, map[string]any{"id": approvalID})
		done.Wait()
		cancel()
		if len(failures) > 0 {
			b.Fatalf("%d of %d subscribers failed, first: %v", len(failures), subscribers, failures[0])
		}
		for _, live := range received {
			if len(live) == 0 || live[len(live)-1].Type != "run.succeeded" {
				b.Fatalf("a subscriber's live events: %v", subTypes(live))
			}
			for _, e := range live {
				if !e.At.Before(released) {
					latencies = append(latencies, e.Received.Sub(e.At))
				}
			}
		}
		n := float64(subscribers)
		rssPerSub = (after["process_resident_memory_bytes"] - before["process_resident_memory_bytes"]) / n
		heapPerSub = (after["go_memstats_heap_inuse_bytes"] - before["go_memstats_heap_inuse_bytes"]) / n
		goroutinesPerSub = (after["go_goroutines"] - before["go_goroutines"]) / n
	}
	b.StopTimer()
	if len(latencies) == 0 {
		b.Fatal("no live event measured")
	}
	slices.Sort(latencies)
	pct := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(len(latencies))/float64(b.N), "frames/op")
	if subscribers >= 100 { // below that, process memory noise swamps it
		// Measured while every subscriber waits, before any live event;
		// heap in use includes garbage not yet collected (an upper bound).
		b.ReportMetric(rssPerSub, "rss-B/sub")
		b.ReportMetric(heapPerSub, "heap-B/sub")
		b.ReportMetric(goroutinesPerSub, "goroutines/sub")
	}
}

// liveBenchTenant creates a tenant for a benchmark (newTenant wants a *testing.T).
func liveBenchTenant(b *testing.B) string {
	out, err := cli("tenant", "create", "--slug", "bench-live-"+randHex(3), "--name", "Bench live")
	if err != nil {
		b.Fatalf("tenant create: %v\n%s", err, out)
	}
	return strings.TrimSpace(out)
}

// liveScrapeMetrics reads the unlabelled samples of an API process's /metrics
// (served on its metrics address, not the API port).
func liveScrapeMetrics(tb testing.TB, p *process) map[string]float64 {
	tb.Helper()
	resp, err := http.Get(p.metricsURL + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			out[name] = f
		}
	}
	if _, ok := out["process_resident_memory_bytes"]; !ok {
		tb.Fatal(fmt.Errorf("no process_resident_memory_bytes in /metrics"))
	}
	return out
}
