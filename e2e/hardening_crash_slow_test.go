package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSlowSideEffectDuplicates measures how often a slow side effect (the
// receiver takes 2s to answer) reaches its receiver more than once while a
// worker is SIGKILLed every 0.5-2s, with the default delivery
// (at_least_once) and with at_most_once. It is a measurement for the
// README, not a regression check, and takes a few minutes: it runs only
// with SLUICE_E2E_MEASURE=1.
//
//	SLUICE_E2E_MEASURE=1 go test -count=1 -run TestSlowSideEffectDuplicates -v ./e2e
func TestSlowSideEffectDuplicates(t *testing.T) {
	if os.Getenv("SLUICE_E2E_MEASURE") != "1" {
		t.Skip("measurement; set SLUICE_E2E_MEASURE=1")
	}
	for _, delivery := range []string{"at_least_once", "at_most_once"} {
		t.Run(delivery, func(t *testing.T) { measureSlowDuplicates(t, delivery) })
	}
}

func measureSlowDuplicates(t *testing.T, delivery string) {
	const nRuns = 100
	st := newIsolatedProcessStack(t, 2) // its workers are SIGKILLed
	slug := "slow-" + strings.ReplaceAll(delivery, "_", "-")
	f := st.fixture(t, slug)
	var mu sync.Mutex
	arrivals := map[string]int{}
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct{ Run string }
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		arrivals[b.Run]++
		mu.Unlock()
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer sink.Close()
	wf, _ := deployWorkflow(t, f, slug, deliveryDefinition(sink.URL+"/slow", delivery, ""))
	g := f.owner.on(st.server)

	stop := make(chan struct{})
	done := make(chan struct{})
	kills := 0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(500*time.Millisecond + rand.N(1500*time.Millisecond)):
			}
			i := rand.IntN(len(st.workers))
			victim := st.workers[i]
			_ = victim.cmd.Process.Kill()
			<-victim.done
			kills++
			w, err := st.startWorker()
			for try := 0; err != nil && try < 10; try++ {
				time.Sleep(500 * time.Millisecond) // retry pacing for a restart on a busy machine
				w, err = st.startWorker()
			}
			if err != nil {
				t.Errorf("restart worker: %v", err)
				return
			}
			st.workers[i] = w
		}
	}()
	ids, err := g.startRuns(wf, f.envID, nRuns, 10, 150*time.Millisecond, func(int) map[string]any { return map[string]any{} }, nil)
	// Load shape of the measurement, not a wait for an outcome: the killing
	// goes on for 3s after the last start, so the last starts' calls (2s
	// each) meet kills too.
	time.Sleep(3 * time.Second)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := g.waitTerminal(ids, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	byStatus := map[string]int{}
	for _, s := range statuses {
		byStatus[s]++
	}
	mu.Lock()
	defer mu.Unlock()
	dupKeys, extra, never := 0, 0, 0
	for _, id := range ids {
		switch n := arrivals[id]; {
		case n == 0:
			never++
		case n > 1:
			dupKeys++
			extra += n - 1
		}
	}
	msg := fmt.Sprintf("slow side effect (2s), delivery %s: %d runs, %d worker kills; %d keys (%.1f%%) reached the receiver more than once (%d extra deliveries), %d never; runs %v",
		delivery, nRuns, kills, dupKeys, 100*float64(dupKeys)/nRuns, extra, never, byStatus)
	t.Log(msg)
	fmt.Println(msg)
	if delivery == "at_most_once" && dupKeys > 0 {
		t.Errorf("at_most_once: %d keys delivered more than once", dupKeys)
	}
}
