package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// hookSink is a receiver for benchmarks: it answers 204 at once, verifies
// every signature with the reference library, and records when each
// message arrived and the event time it carries.
type hookSink struct {
	*httptest.Server
	wh       *standardwebhooks.Webhook
	mu       sync.Mutex
	received map[string][]hookReceipt // run id -> receipts
	total    int
	badSigs  int
	dupIDs   int
	seen     map[string]bool
}

type hookReceipt struct {
	at, event time.Time
}

func newHookSink(b *testing.B) *hookSink {
	s := &hookSink{received: map[string][]hookReceipt{}, seen: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		body, _ := io.ReadAll(r.Body)
		var msg struct {
			Timestamp time.Time `json:"timestamp"`
			Data      struct {
				RunID string `json:"runID"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &msg)
		s.mu.Lock()
		wh := s.wh
		s.mu.Unlock()
		bad := wh == nil || wh.Verify(body, r.Header) != nil
		s.mu.Lock()
		if bad {
			s.badSigs++
		}
		if id := r.Header.Get("webhook-id"); s.seen[id] {
			s.dupIDs++
		} else {
			s.seen[id] = true
		}
		s.received[msg.Data.RunID] = append(s.received[msg.Data.RunID], hookReceipt{at: now, event: msg.Timestamp})
		s.total++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(s.Close)
	return s
}

// BenchmarkWebhookDelivery starts a batch of runs per op (10: a light load;
// 200 at once: a burst), each emitting two events (run.started,
// run.succeeded) delivered to a local receiver, and reports the delivery
// throughput (deliveries over the time from the first event to the last
// receipt) and the latency from each event's `at` to its receipt. Runs,
// API, workers, Postgres, Redis and the receiver share the machine.
//
//	go test ./e2e -run '^$' -bench WebhookDelivery -benchtime 3x
func BenchmarkWebhookDelivery(b *testing.B) {
	for _, n := range []int{10, 200} {
		b.Run(fmt.Sprintf("runs=%d", n), func(b *testing.B) { benchWebhooks(b, n) })
	}
}

func benchWebhooks(b *testing.B, runs int) {
	tok, envID, err := benchTenant(b, "bench-hooks")
	if err != nil {
		b.Fatal(err)
	}
	g := newClient(b, 0, tok)
	wf, err := g.deployDef(envID, "hooks-"+randHex(3), chainDefinition(1))
	if err != nil {
		b.Fatal(err)
	}
	sink := newHookSink(b)
	d, err := g.tryOK(mHookCreate, map[string]any{"u": sink.URL + "/bench"})
	if err != nil {
		b.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(str(d, "createWebhookEndpoint.secret"))
	if err != nil {
		b.Fatal(err)
	}
	sink.mu.Lock()
	sink.wh = wh
	sink.mu.Unlock()

	var latencies []time.Duration
	var busy time.Duration
	deliveries := 0
	b.ResetTimer()
	for range b.N {
		ids, err := g.startRuns(wf, envID, runs, 16, 0, func(i int) map[string]any { return map[string]any{"n": i} }, nil)
		if err != nil {
			b.Fatal(err)
		}
		var got [][]hookReceipt
		// Every 20ms: the receipts carry their own arrival times.
		err = poll(3*time.Minute, 20*time.Millisecond, func() (bool, string) {
			got = got[:0]
			n := 0
			sink.mu.Lock()
			for _, id := range ids {
				got = append(got, slices.Clone(sink.received[id]))
				n += len(sink.received[id])
			}
			sink.mu.Unlock()
			return n >= 2*len(ids), fmt.Sprintf("%d of %d deliveries arrived", n, 2*len(ids))
		})
		if err != nil {
			b.Fatal(err)
		}
		var first, last time.Time
		for _, rs := range got {
			for _, r := range rs {
				latencies = append(latencies, r.at.Sub(r.event))
				if first.IsZero() || r.event.Before(first) {
					first = r.event
				}
				if r.at.After(last) {
					last = r.at
				}
				deliveries++
			}
		}
		busy += last.Sub(first)
	}
	b.StopTimer()
	sink.mu.Lock()
	bad, dups := sink.badSigs, sink.dupIDs
	sink.mu.Unlock()
	if bad > 0 || dups > 0 {
		b.Fatalf("%d messages failed verification, %d duplicate webhook-ids", bad, dups)
	}
	slices.Sort(latencies)
	pct := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(deliveries)/busy.Seconds(), "deliveries/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(deliveries)/float64(b.N), "deliveries/op")
	fmt.Printf("webhooks: %d deliveries of %d runs; latency p50 %.1fms p99 %.1fms max %s\n",
		deliveries, b.N*runs, pct(0.5), pct(0.99), latencies[len(latencies)-1].Round(time.Millisecond))
}
