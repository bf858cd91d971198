package runs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/mapitem"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/tasks"
)

// TestMapItemsDurable: a map step's item tasks are lost (a Redis wipe):
// Postgres knows the items are due and the reconciler sends them after its
// grace; a 503 retries the item under the same Idempotency-Key once the
// clock passes its backoff; a finished item starts the next waiting one
// (concurrency 2); the last one finishes the map step with the output in
// item order.
func TestMapItemsDurable(t *testing.T) {
	t.Parallel()
	x := newH(t)
	var mu sync.Mutex
	keys := map[string][]int{} // path -> statuses answered
	var idem []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		code := http.StatusOK
		if r.URL.Path == "/items/1" && len(keys[r.URL.Path]) == 0 {
			code = http.StatusServiceUnavailable
		}
		keys[r.URL.Path] = append(keys[r.URL.Path], code)
		if r.URL.Path == "/items/1" {
			idem = append(idem, r.Header.Get("Idempotency-Key"))
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"path": r.URL.Path})
	}))
	t.Cleanup(srv.Close)
	id := x.start(x.deploy(def("steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "['a', 'b', 'c']", "concurrency": 2,
			"step": map[string]any{"type": "http", "sideEffect": true, "request": map[string]any{"method": "GET", "url": srv.URL + "/items/{{ index }}?v={{ item }}"},
				"retry": map[string]any{"maxAttempts": 3, "initialInterval": "10s", "maxInterval": "10s"}}},
	)), nil)
	lost := x.drain() // the map step's claim starts two items, whose tasks are lost
	if len(lost) != 2 || lost[0].Kind != tasks.KindMapItem || lost[1].Kind != tasks.KindMapItem {
		t.Fatalf("tasks after the map's claim: %+v", lost)
	}
	if r := x.run(id); r.Status != run.StatusRunning {
		t.Fatalf("run %s, want running", r.Status)
	}
	due := func() []tasks.Task {
		t.Helper()
		ts, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	if ts := due(); len(ts) != 0 {
		t.Fatalf("due within the grace: %+v", ts)
	}
	x.clock.Advance(3 * time.Second)
	ts := due()
	if len(ts) != 2 || ts[0].Kind != tasks.KindMapItem || (ts[0].ID != lost[0].ID && ts[0].ID != lost[1].ID) {
		t.Fatalf("due past the grace: %+v (lost %+v)", ts, lost)
	}
	runItems := func(ts []tasks.Task) {
		t.Helper()
		for _, tk := range ts {
			if tk.Kind != tasks.KindMapItem || tk.At.After(x.clock.Now()) {
				continue
			}
			if err := x.e.ExecuteMapItem(context.Background(), tk.TenantID, tk.RunID, tk.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	runItems(ts)
	runItems(x.rec.take()) // item 2, started by the first to finish
	if r := x.run(id); r.Status != run.StatusRunning {
		t.Fatalf("run %s while item 1 waits for its retry", r.Status)
	}
	x.clock.Advance(10*time.Second + 3*time.Second)
	runItems(due())
	x.drain()
	r := x.run(id)
	if r.Status != run.StatusSucceeded {
		t.Fatalf("run %s: %v %v", r.Status, r.ErrorClass, r.ErrorMessage)
	}
	var out []map[string]any
	if err := json.Unmarshal(r.Output, &out); err != nil || len(out) != 3 {
		t.Fatalf("output %s: %v", r.Output, err)
	}
	for i, o := range out {
		if body, _ := o["body"].(map[string]any); body["path"] != "/items/"+string(rune('0'+i)) {
			t.Errorf("output[%d] = %v", i, o)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys["/items/1"]) != 2 || len(keys["/items/0"]) != 1 || len(keys["/items/2"]) != 1 {
		t.Errorf("calls per item: %v", keys)
	}
	if len(idem) != 2 || idem[0] == "" || idem[0] != idem[1] {
		t.Errorf("item 1's Idempotency-Keys across its retry: %v", idem)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		items, err := c.MapItem.Query().Where(mapitem.RunID(id)).Order(ent.Asc(mapitem.FieldIndex)).All(ctx)
		if err != nil {
			return err
		}
		if len(items) != 3 || items[1].Attempts != 2 || items[0].Attempts != 1 || items[1].Status != mapitem.StatusSucceeded {
			t.Errorf("items: %+v", items)
		}
		return nil
	})
}
