package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Response caching and schema drift of http steps (README "Response
// caching", "Schema drift").

const qCacheRun = `query($id: ID!) { node(id: $id) { ... on Run { id status output error { class message stepID }
	steps { stepID status output error { class message } calls { statusCode durationMs cache error } }
	events { seq type stepID data } } } }`

// cacheAPI is a loopback API counting its calls; down makes it answer 503.
type cacheAPI struct {
	srv   *httptest.Server
	calls atomic.Int64
	down  atomic.Bool
	mu    sync.Mutex
	body  string
}

func newCacheAPI(t *testing.T, body string) *cacheAPI {
	a := &cacheAPI{body: body}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		if a.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		// Slow enough that concurrent runs overlap with the first call.
		time.Sleep(50 * time.Millisecond)
		a.mu.Lock()
		b := a.body
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, b)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *cacheAPI) set(body string) {
	a.mu.Lock()
	a.body = body
	a.mu.Unlock()
}

// cachedDef is a workflow whose http step has a cache policy and whose
// transform reads body.name.
func cachedDef(url string, cache map[string]any) map[string]any {
	fetch := map[string]any{"id": "fetch", "type": "http", "credential": "crm",
		"request": map[string]any{"method": "GET", "url": url}, "retry": map[string]any{"maxAttempts": 1}}
	if cache != nil {
		fetch["cache"] = cache
	}
	return map[string]any{"schemaVersion": 1, "steps": []any{fetch,
		map[string]any{"id": "shape", "type": "transform", "needs": []any{"fetch"}, "output": map[string]any{"name": "steps.fetch.output.body.name"}}},
		"output": "steps.shape.output"}
}

// cacheStates lists the cache field of a run's fetch calls.
func cacheStates(run map[string]any) []string {
	var out []string
	calls, _ := stepOf(run, "fetch")["calls"].([]any)
	for _, c := range calls {
		out = append(out, str(c, "cache"))
	}
	return out
}

func finishRun(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	waitRun(t, c, id, 60*time.Second, "succeeded", "failed", "cancelled")
	run, _ := get(c.ok(qCacheRun, map[string]any{"id": id}), "node").(map[string]any)
	return run
}

func TestResponseCacheServesConcurrentRunsFromOneUpstreamCall(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "rcache")
	api := newCacheAPI(t, `{"name":"ada"}`)
	wf, _ := deployWorkflow(t, f, "cached", cachedDef(api.srv.URL+"/items/1", map[string]any{"ttl": "60s"}))

	const n = 50
	runIDs := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := newClient(t, i, f.owner.token).tryOK(mStartRun, map[string]any{"w": wf, "e": f.envID})
			if err != nil {
				errs <- err
				return
			}
			runIDs[i] = str(d, "startRun.id")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	hits, misses := 0, 0
	for _, id := range runIDs {
		run := finishRun(t, f.owner, id)
		if run["status"] != "succeeded" || str(run, "output.name") != "ada" {
			t.Fatalf("run %s: %v", id, run)
		}
		for _, s := range cacheStates(run) {
			switch s {
			case "hit":
				if call := get(stepOf(run, "fetch"), "calls").([]any)[0]; get(call, "durationMs") != nil || get(call, "statusCode") != float64(200) {
					t.Fatalf("a hit's call: %v", call)
				}
				hits++
			case "miss":
				misses++
			}
		}
	}
	if got := api.calls.Load(); got != 1 {
		t.Fatalf("%d runs made %d upstream calls, want 1", n, got)
	}
	if misses != 1 || hits != n-1 {
		t.Fatalf("trace: %d misses and %d hits, want 1 and %d", misses, hits, n-1)
	}

	// A rotated credential never serves the previous version's responses.
	f.owner.ok(mRotateCred, map[string]any{"id": f.credentialID, "s": map[string]any{"token": "rotated-" + randHex(8)}})
	run := finishRun(t, f.owner, str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id"))
	if run["status"] != "succeeded" || strings.Join(cacheStates(run), ",") != "miss" || api.calls.Load() != 2 {
		t.Fatalf("after rotation: calls %d, run %v", api.calls.Load(), run)
	}

	// Another tenant with the same URL has entries of its own, and reads
	// none of this tenant's.
	g := newFixture(t, "rcache2")
	wf2, _ := deployWorkflow(t, g, "cached", cachedDef(api.srv.URL+"/items/1", map[string]any{"ttl": "60s"}))
	run = finishRun(t, g.owner, str(g.owner.ok(mStartRun, map[string]any{"w": wf2, "e": g.envID}), "startRun.id"))
	if run["status"] != "succeeded" || strings.Join(cacheStates(run), ",") != "miss" || api.calls.Load() != 3 {
		t.Fatalf("other tenant: calls %d, run %v", api.calls.Load(), run)
	}
	db := appDB(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`SELECT set_config('app.tenant_id', $1, true)`, g.tenantID); err != nil {
		t.Fatal(err)
	}
	var visible, foreign int
	if err := tx.QueryRow(`SELECT count(*), count(*) FILTER (WHERE tenant_id <> $1) FROM response_cache_entries`, g.tenantID).Scan(&visible, &foreign); err != nil {
		t.Fatal(err)
	}
	if visible != 1 || foreign != 0 {
		t.Fatalf("tenant %s sees %d entries, %d of another tenant", g.tenantID, visible, foreign)
	}
}

func TestResponseCacheServesStaleResponsesWhileTheAPIIsDown(t *testing.T) {
	f := newFixture(t, "rstale")
	api := newCacheAPI(t, `{"name":"grace"}`)
	wf, _ := deployWorkflow(t, f, "stale", cachedDef(api.srv.URL+"/items/2", map[string]any{"ttl": "60s", "staleIfError": "1h"}))
	first := finishRun(t, f.owner, str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id"))
	if first["status"] != "succeeded" || strings.Join(cacheStates(first), ",") != "miss" {
		t.Fatalf("first run: %v", first)
	}

	// The entry expires (its instants moved back, as if 2 minutes passed)
	// and the API goes down.
	res, err := ownerDB(t).Exec(`UPDATE response_cache_entries SET fresh_until = now() - interval '1 minute',
		stored_at = stored_at - interval '2 minutes' WHERE tenant_id = $1`, f.tenantID)
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("expire entry: %v (%d rows)", err, n)
	}
	api.down.Store(true)
	for range 3 {
		run := finishRun(t, f.owner, str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id"))
		if run["status"] != "succeeded" || str(run, "output.name") != "grace" {
			t.Fatalf("run with the API down: %v", run)
		}
		if got := strings.Join(cacheStates(run), ","); got != "stale" {
			t.Fatalf("trace cache states %q, want stale: %v", got, run)
		}
	}
	if got := api.calls.Load(); got != 4 {
		t.Fatalf("upstream calls %d, want 4 (one fill, then one try per run while down)", got)
	}

	// Past staleIfError the failure is the step's again.
	if _, err := ownerDB(t).Exec(`UPDATE response_cache_entries SET stale_until = now() - interval '1 second' WHERE tenant_id = $1`, f.tenantID); err != nil {
		t.Fatal(err)
	}
	run := finishRun(t, f.owner, str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id"))
	if run["status"] != "failed" || str(run, "error.class") != "transient" {
		t.Fatalf("past staleIfError: %v", run)
	}
}

// driftDef is a workflow whose transform reads body.subject of an
// uncached http step.
func driftDef(url string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "fetch", "type": "http", "request": map[string]any{"method": "GET", "url": url}},
		map[string]any{"id": "shape", "type": "transform", "needs": []any{"fetch"}, "output": map[string]any{"subject": "steps.fetch.output.body.subject"}}},
		"output": "steps.shape.output"}
}

const qDriftReport = `query($w: ID!) { driftReport(workflowID: $w) { id versionID stepID path kind fromType toType breaking firstRunID createdAt } }`

func countEvents(run map[string]any, typ string) int {
	n := 0
	for _, e := range eventTypes(run) {
		if e == typ {
			n++
		}
	}
	return n
}

func TestSchemaDriftFailsRemovedFieldsAndReportsAdditions(t *testing.T) {
	f := newFixture(t, "drift")
	api := newCacheAPI(t, `{"subject":"hello","id":1}`)
	wf, _ := deployWorkflow(t, f, "drift", driftDef(api.srv.URL+"/tickets/1"))
	start := func() map[string]any {
		return finishRun(t, f.owner, str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID}), "startRun.id"))
	}

	if run := start(); run["status"] != "succeeded" || countEvents(run, "step.response_changed") != 0 {
		t.Fatalf("first run (learns the shape): %v", run)
	}

	hooks := newScriptServer(t)
	_, secret := hookEndpoint(t, f.owner, hooks.URL+"/drift", "step.response_changed")

	// An added field: one step.response_changed, whichever run sees it first.
	api.set(`{"subject":"hello","id":1,"priority":"high"}`)
	added := start()
	changed := 0
	for _, r := range []map[string]any{added, start(), start()} {
		if r["status"] != "succeeded" {
			t.Fatalf("run after an added field: %v", r)
		}
		changed += countEvents(r, "step.response_changed")
	}
	if changed != 1 || countEvents(added, "step.response_changed") != 1 {
		t.Fatalf("step.response_changed events: %d (first run %d), want 1", changed, countEvents(added, "step.response_changed"))
	}

	msg := hookWaitMsgs(t, hooks, "/drift", 1, forRun(str(added, "id")))[0]
	mustVerify(t, msg, secret, "step.response_changed")
	if msg.Type != "step.response_changed" || str(msg.Data, "stepID") != "fetch" {
		t.Fatalf("webhook: %s %v", msg.Type, msg.Data)
	}

	// The field the transform reads is removed: schema_drift naming it.
	api.set(`{"id":1,"priority":"high"}`)
	broken := start()
	if broken["status"] != "failed" || str(broken, "error.class") != "schema_drift" || !strings.Contains(str(broken, "error.message"), "body.subject") {
		t.Fatalf("run after the read field was removed: %v", broken)
	}

	report, _ := get(f.owner.ok(qDriftReport, map[string]any{"w": wf}), "driftReport").([]any)
	byPath := map[string]map[string]any{}
	for _, r := range report {
		m := r.(map[string]any)
		byPath[str(m, "path")+" "+str(m, "kind")] = m
	}
	if a := byPath["body.priority added"]; a == nil || a["breaking"] != false || str(a, "firstRunID") != str(added, "id") || str(a, "stepID") != "fetch" {
		t.Fatalf("added change: %v in %v", a, report)
	}
	if r := byPath["body.subject removed"]; r == nil || r["breaking"] != true || str(r, "firstRunID") != str(broken, "id") || str(r, "fromType") != "string" {
		t.Fatalf("removed change: %v in %v", r, report)
	}
	if len(report) != 2 {
		t.Fatalf("report: %v", report)
	}

	if r := f.owner.fail("VALIDATION", qDriftReport, map[string]any{"w": "run_nope"}); len(r.Errors) == 0 {
		t.Fatal("a bad workflow id was accepted")
	}

	// Another tenant cannot read the report.
	other := newFixture(t, "drift2")
	if r := other.owner.fail("NOT_FOUND", qDriftReport, map[string]any{"w": wf}); len(r.Errors) == 0 {
		t.Fatal("another tenant's drift report was readable")
	}
}

func TestResponseCacheBadPoliciesAreRefused(t *testing.T) {
	f := newFixture(t, "rcbad")
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "bad", "s": "bad-cache"}), "createWorkflow.id")
	step := func(extra map[string]any) map[string]any {
		s := map[string]any{"id": "fetch", "type": "http", "request": map[string]any{"method": "GET", "url": "https://api.example.com/x"}}
		for k, v := range extra {
			s[k] = v
		}
		return map[string]any{"schemaVersion": 1, "steps": []any{s}}
	}
	for _, tt := range []struct {
		name string
		def  map[string]any
		path string
	}{
		{"side effect", step(map[string]any{"sideEffect": true, "cache": map[string]any{"ttl": "60s"}}), "$.steps[0].cache"},
		{"negative ttl", step(map[string]any{"cache": map[string]any{"ttl": "-1s"}}), "$.steps[0].cache.ttl"},
		{"ttl above the cap", step(map[string]any{"cache": map[string]any{"ttl": "48h"}}), "$.steps[0].cache.ttl"},
		{"not a duration", step(map[string]any{"cache": map[string]any{"ttl": "soon"}}), "$.steps[0].cache.ttl"},
		{"staleIfError above the cap", step(map[string]any{"cache": map[string]any{"ttl": "1m", "staleIfError": "720h"}}), "$.steps[0].cache.staleIfError"},
		{"no ttl", step(map[string]any{"cache": map[string]any{"staleIfError": "1h"}}), "$.steps[0].cache.ttl"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := f.owner.fail("VALIDATION", mCreateVer, map[string]any{"w": wf, "d": tt.def})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
		})
	}
	var versions int
	if err := ownerDB(t).QueryRow(`SELECT count(*) FROM workflow_versions WHERE workflow_id = $1`, wf).Scan(&versions); err != nil || versions != 0 {
		t.Fatalf("versions written: %d (%v)", versions, err)
	}
}
