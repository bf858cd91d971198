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
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
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

// TestMapItemTakeoverAndCancel: a worker claims an item and dies; while
// its heartbeat is fresh nothing is re-sent; past the stale period the
// reconciler sends a takeover, which runs the item under the same attempt
// and hands its slot on. cancelRun then cancels the items not running, and
// their late deliveries call nothing.
func TestMapItemTakeoverAndCancel(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newScript(t, 200)
	id := x.start(x.deploy(def("steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "[1, 2, 3, 4]", "concurrency": 1,
			"step": map[string]any{"type": "http", "request": map[string]any{"method": "GET", "url": srv.URL + "/{{ item }}"}}},
	)), nil)
	first := x.drain()
	if len(first) != 1 || first[0].Kind != tasks.KindMapItem {
		t.Fatalf("tasks: %+v", first)
	}
	// A worker claims the item and dies before calling.
	ctx := viewer.SystemContext(context.Background(), x.tenantID)
	if err := store.InTenant(ctx, testDB.App, func(ctx context.Context) error {
		it, _, err := x.e.claimItem(ctx, x.tenantID, id, first[0].ID)
		if err == nil && it == nil {
			t.Error("the claim found nothing to do")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	x.clock.Advance(time.Minute)
	for _, tk := range x.rec.take() {
		t.Fatalf("a task was sent while the item's holder is fresh: %+v", tk)
	}
	if ts, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{}); err != nil || len(ts) != 0 {
		t.Fatalf("due while the holder is fresh: %+v %v", ts, err)
	}
	// A duplicate delivery while it is held does nothing.
	if err := x.e.ExecuteMapItem(context.Background(), x.tenantID, id, first[0].ID); err != nil || srv.count() != 0 {
		t.Fatalf("a delivery ran a held item: %v, %d calls", err, srv.count())
	}
	x.clock.Advance(stale)
	ts, err := x.e.DueTasks(context.Background(), x.tenantID, ReconcileOptions{})
	if err != nil || len(ts) != 1 || ts[0].ID != first[0].ID || ts[0].Variant == first[0].Variant {
		t.Fatalf("takeover task: %+v %v (first %+v)", ts, err, first[0])
	}
	if err := x.e.ExecuteMapItem(context.Background(), x.tenantID, id, ts[0].ID); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 1 {
		t.Fatalf("%d calls after the takeover, want 1", srv.count())
	}
	next := x.rec.take()
	if len(next) != 1 || next[0].Kind != tasks.KindMapItem || next[0].ID == first[0].ID {
		t.Fatalf("the finished item started %+v", next)
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.CancelRun(ctx, id)
		return err
	})
	if err := x.e.ExecuteMapItem(context.Background(), x.tenantID, id, next[0].ID); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 1 {
		t.Fatalf("%d calls after cancelRun, want 1", srv.count())
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		items, err := c.MapItem.Query().Where(mapitem.RunID(id)).Order(ent.Asc(mapitem.FieldIndex)).All(ctx)
		if err != nil {
			return err
		}
		want := []mapitem.Status{mapitem.StatusSucceeded, mapitem.StatusCancelled, mapitem.StatusCancelled, mapitem.StatusCancelled}
		for i, it := range items {
			if it.Status != want[i] || (i == 0 && it.Attempts != 1) {
				t.Errorf("item %d: %s after %d attempts, want %s", i, it.Status, it.Attempts, want[i])
			}
		}
		return nil
	})
	if r := x.run(id); r.Status != run.StatusCancelled {
		t.Errorf("run %s", r.Status)
	}
	if sr := x.step(id, "each"); sr.Status != steprun.StatusCancelled {
		t.Errorf("map step %s after cancelRun, want cancelled", sr.Status)
	}
}

// TestMapStoppedByAnotherStep: a step beside a running map fails the run;
// the map step is cancelled with its items not started, and resumeRun runs
// the map again: its succeeded items are not called again.
func TestMapStoppedByAnotherStep(t *testing.T) {
	t.Parallel()
	x := newH(t)
	items := newScript(t, 200)
	boom := newScript(t, 422)
	id := x.start(x.deploy(def("steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "[1, 2, 3]", "concurrency": 1,
			"step": map[string]any{"type": "http", "request": map[string]any{"method": "GET", "url": items.URL + "/{{ item }}"}}},
		httpStep("boom", boom.URL),
	)), nil)
	itemTasks := x.drain() // the map starts item 0; boom fails the run
	if r := x.run(id); r.Status != run.StatusFailed || r.FailedStepID == nil || *r.FailedStepID != "boom" {
		t.Fatalf("run %s failed at %v", r.Status, r.FailedStepID)
	}
	if sr := x.step(id, "each"); sr.Status != steprun.StatusCancelled {
		t.Fatalf("map step %s, want cancelled", sr.Status)
	}
	for _, tk := range itemTasks {
		if err := x.e.ExecuteMapItem(context.Background(), tk.TenantID, tk.RunID, tk.ID); err != nil {
			t.Fatal(err)
		}
	}
	if items.count() != 0 {
		t.Fatalf("%d item calls after the run failed, want 0", items.count())
	}
	boom.set(200)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.ResumeRun(ctx, id)
		return err
	})
	for i := 0; i < 10; i++ {
		ts := x.drain()
		if len(ts) == 0 {
			break
		}
		for _, tk := range ts {
			if err := x.e.ExecuteMapItem(context.Background(), tk.TenantID, tk.RunID, tk.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := x.run(id)
	if r.Status != run.StatusSucceeded || items.count() != 3 {
		t.Fatalf("after resume: run %s, %d item calls (want succeeded, 3)", r.Status, items.count())
	}
	var out []map[string]any
	if err := json.Unmarshal(r.Output, &out); err != nil || len(out) != 3 {
		t.Fatalf("output %s", r.Output)
	}
}

// TestMapItemCrashLimit: an item whose workers go silent (die) while
// running it is taken over, and at the crash limit it fails with class
// crashed instead of running again: under the fail policy, so do the map
// step and the run.
func TestMapItemCrashLimit(t *testing.T) {
	t.Parallel()
	x := newH(t)
	srv := newScript(t, 200)
	id := x.start(x.deploy(def("steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "[1]",
			"step": map[string]any{"type": "http", "request": map[string]any{"method": "GET", "url": srv.URL + "/{{ item }}"}}},
	)), nil)
	first := x.drain()
	if len(first) != 1 {
		t.Fatalf("tasks: %+v", first)
	}
	ctx := viewer.SystemContext(context.Background(), x.tenantID)
	for i := 0; i < DefaultCrashLimit; i++ {
		// A worker claims the item (a takeover after the first) and dies.
		if err := store.InTenant(ctx, testDB.App, func(ctx context.Context) error {
			it, _, err := x.e.claimItem(ctx, x.tenantID, id, first[0].ID)
			if err == nil && (it == nil || it.crashed > 0) {
				t.Errorf("claim %d: %+v", i+1, it)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		x.clock.Advance(stale + time.Second)
	}
	// The third silence: the item fails, nothing is called.
	if err := x.e.ExecuteMapItem(context.Background(), x.tenantID, id, first[0].ID); err != nil {
		t.Fatal(err)
	}
	if srv.count() != 0 {
		t.Errorf("%d calls, want none", srv.count())
	}
	r := x.run(id)
	if r.Status != run.StatusFailed || r.ErrorClass == nil || *r.ErrorClass != "crashed" {
		t.Fatalf("run %s %v %v", r.Status, r.ErrorClass, r.ErrorMessage)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		it, err := c.MapItem.Query().Where(mapitem.RunID(id)).Only(ctx)
		if err != nil {
			return err
		}
		if it.Status != mapitem.StatusFailed || it.Takeovers != DefaultCrashLimit-1 || it.ErrorClass == nil || *it.ErrorClass != "crashed" {
			t.Errorf("item: %s, %d takeovers, class %v", it.Status, it.Takeovers, it.ErrorClass)
		}
		return nil
	})
}

// TestMapResumeAfterItsLastItemSucceeded: another step fails the run while
// a map step's last item runs; the item then succeeds and keeps its
// output. resumeRun ends the map step at once from its items, calling
// nothing again.
func TestMapResumeAfterItsLastItemSucceeded(t *testing.T) {
	t.Parallel()
	x := newH(t)
	items := newScript(t, 200)
	boom := newScript(t, 422)
	id := x.start(x.deploy(def("steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "[7]",
			"step": map[string]any{"type": "http", "request": map[string]any{"method": "GET", "url": items.URL + "/{{ item }}"}}},
		httpStep("boom", boom.URL),
	)), nil)
	var mapTask, boomTask tasks.Task
	for _, tk := range x.rec.take() {
		switch tk.StepID {
		case "each":
			mapTask = tk
		case "boom":
			boomTask = tk
		}
	}
	if err := x.execute(mapTask); err != nil {
		t.Fatal(err)
	}
	itemTasks := x.rec.take()
	if len(itemTasks) != 1 {
		t.Fatalf("item tasks %+v", itemTasks)
	}
	// A worker claims the item; meanwhile boom fails the run.
	ctx := viewer.SystemContext(context.Background(), x.tenantID)
	var it *itemJob
	if err := store.InTenant(ctx, testDB.App, func(ctx context.Context) error {
		var err error
		it, _, err = x.e.claimItem(ctx, x.tenantID, id, itemTasks[0].ID)
		return err
	}); err != nil || it == nil {
		t.Fatalf("claim: %v %v", it, err)
	}
	if err := x.execute(boomTask); err != nil {
		t.Fatal(err)
	}
	if sr := x.step(id, "each"); sr.Status != steprun.StatusCancelled || x.run(id).Status != run.StatusFailed {
		t.Fatalf("map step %s, run %s", sr.Status, x.run(id).Status)
	}
	out, calls, execErr := x.e.runStep(ctx, it.job)
	if err := x.e.stepTx(ctx, id, func(ctx context.Context) error { return x.e.finishItem(ctx, it, out, calls, execErr) }); err != nil {
		t.Fatal(err)
	}
	boom.set(200)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, err := x.e.ResumeRun(ctx, id)
		return err
	})
	if left := x.drain(); len(left) != 0 {
		t.Fatalf("tasks after the resume: %+v", left)
	}
	r := x.run(id)
	if r.Status != run.StatusSucceeded || items.count() != 1 {
		t.Fatalf("after resume: run %s, %d item calls (want succeeded, 1)", r.Status, items.count())
	}
	var o []map[string]any
	if err := json.Unmarshal(r.Output, &o); err != nil || len(o) != 1 || o[0]["status"] != float64(200) {
		t.Fatalf("output %s", r.Output)
	}
}
