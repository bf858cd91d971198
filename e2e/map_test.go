package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const qMapRun = `query($id: ID!) { node(id: $id) { ... on Run { id status output costMicroUSD error { class message stepID }
	steps { stepID status attempts output error { class message } items { total queued running succeeded failed cancelled } } } } }`

// mapAPI is a local HTTP API for map items: POST /items/<index> answers
// {"double": 2*index}, except the index in failAt (while set), which gets a
// 422. It counts calls per Idempotency-Key and keeps the most in flight.
type mapAPI struct {
	srv      *httptest.Server
	failAt   atomic.Int64 // -1: none
	mu       sync.Mutex
	calls    map[string]int
	keyIndex map[string]int
	inFlight atomic.Int64
	peak     atomic.Int64
}

func newMapAPI(t *testing.T, failAt int) *mapAPI {
	a := &mapAPI{calls: map[string]int{}, keyIndex: map[string]int{}}
	a.failAt.Store(int64(failAt))
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := a.inFlight.Add(1)
		defer a.inFlight.Add(-1)
		for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
		}
		i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/items/"))
		if err != nil {
			http.Error(w, "bad path", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		var in struct{ Item any }
		_ = json.Unmarshal(body, &in)
		key := r.Header.Get("Idempotency-Key")
		a.mu.Lock()
		a.calls[key]++
		a.keyIndex[key] = i
		a.mu.Unlock()
		// A little work, so that items overlap.
		time.Sleep(2 * time.Millisecond)
		if int64(i) == a.failAt.Load() {
			http.Error(w, `{"error": "unprocessable"}`, http.StatusUnprocessableEntity)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"double": %d, "item": %v}`, 2*i, in.Item)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *mapAPI) snapshot() (calls map[string]int, keyIndex map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	calls, keyIndex = map[string]int{}, map[string]int{}
	for k, v := range a.calls {
		calls[k] = v
	}
	for k, v := range a.keyIndex {
		keyIndex[k] = v
	}
	return calls, keyIndex
}

func mapHTTPDef(url, policy string, n int) map[string]any {
	return engDef(nil, "steps.each.output",
		map[string]any{"id": "list", "type": "transform", "output": fmt.Sprintf("lists.range(%d)", n)},
		map[string]any{"id": "each", "type": "map", "needs": []any{"list"}, "items": "steps.list.output", "concurrency": 20, "failurePolicy": policy,
			"step": map[string]any{"type": "http", "sideEffect": true,
				"request": map[string]any{"method": "POST", "url": url + "/items/{{ index }}", "body": map[string]any{"item": "{{ item }}"}}}})
}

// TestMapHTTPContinue maps 1,000 items over a local API with concurrency
// 20 and the continue policy: one item gets a 422, the run succeeds with
// 999 results and that item's error at its index, each item called once
// under a key of its own, never more than 20 at once; a SANDBOX replay
// returns the recorded output and calls nothing.
func TestMapHTTPContinue(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-continue")
	api := newMapAPI(t, 500)
	wf, _ := deployWorkflow(t, f, "map-continue", mapHTTPDef(api.srv.URL, "continue", 1000))
	id := engStart(t, f.owner, f, wf, nil)
	run := waitMapRun(t, f.owner, id, "succeeded")

	out, _ := run["output"].([]any)
	if len(out) != 1000 {
		t.Fatalf("output has %d entries, want 1000", len(out))
	}
	errorsSeen := 0
	for i, e := range out {
		m, _ := e.(map[string]any)
		if i == 500 {
			if get(m, "error.class") != "permanent" || !strings.Contains(str(m, "error.message"), "422") {
				t.Errorf("item 500 = %v, want {error: {class: permanent, message: ...422...}}", m)
			}
			errorsSeen++
			continue
		}
		if _, isErr := m["error"]; isErr {
			errorsSeen++
		}
		if get(m, "status") != float64(200) || get(m, "body.double") != float64(2*i) || get(m, "body.item") != float64(i) {
			t.Fatalf("item %d = %v, want status 200 and body {double: %d, item: %d}", i, m, 2*i, i)
		}
	}
	if errorsSeen != 1 {
		t.Errorf("%d errors in the output, want 1", errorsSeen)
	}
	each := stepOf(run, "each")
	if get(each, "items.total") != float64(1000) || get(each, "items.succeeded") != float64(999) || get(each, "items.failed") != float64(1) {
		t.Errorf("items = %v, want 1000 total, 999 succeeded, 1 failed", each["items"])
	}
	// The failed item, found by status; items page in item order.
	qItems := `query($id: ID!, $s: MapItemStatus, $n: Int) { node(id: $id) { ... on Run { steps { stepID
		mapItems(first: $n, status: $s) { totalCount edges { node { id index status attempts item output error { class message } calls { statusCode } } } } } } } }`
	failed := mapItemsOf(t, f.owner.ok(qItems, map[string]any{"id": id, "s": "failed", "n": 10}))
	if len(failed) != 1 || get(failed[0], "index") != float64(500) || get(failed[0], "item") != float64(500) ||
		get(failed[0], "error.class") != "permanent" || get(failed[0], "attempts") != float64(1) || get(failed[0], "output") != nil {
		t.Errorf("failed items: %v", failed)
	}
	firstPage := mapItemsOf(t, f.owner.ok(qItems, map[string]any{"id": id, "n": 3}))
	if len(firstPage) != 3 || get(firstPage[2], "index") != float64(2) || get(firstPage[2], "output.body.double") != float64(4) || get(firstPage[2], "status") != "succeeded" {
		t.Errorf("first page of items: %v", firstPage)
	}
	itemID := str(failed[0], "id")
	if n := get(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on MapItem { index status } } }`, map[string]any{"id": itemID}), "node.index"); n != float64(500) {
		t.Errorf("node(id: %s).index = %v, want 500", itemID, n)
	}
	other := newFixture(t, "map-continue-other")
	if n := get(other.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": itemID}), "node"); n != nil {
		t.Errorf("another tenant reads the map item: %v", n)
	}

	calls, keys := api.snapshot()
	if len(calls) != 1000 {
		t.Errorf("%d distinct Idempotency-Keys, want 1000 (one per item)", len(calls))
	}
	for k, n := range calls {
		if n != 1 {
			t.Errorf("item %d (key %s) called %d times, want once", keys[k], k, n)
		}
	}
	if p := api.peak.Load(); p > 20 {
		t.Errorf("%d calls in flight at once, want at most concurrency 20", p)
	}

	// A SANDBOX replay returns the map's recorded output and calls nothing.
	replay := str(f.owner.ok(mEngReplay, map[string]any{"id": id, "m": "SANDBOX"}), "replayRun.id")
	rr := waitMapRun(t, f.owner, replay, "succeeded")
	if got, _ := json.Marshal(rr["output"]); string(got) != mustJSON(t, run["output"]) {
		t.Errorf("sandbox replay output differs from the source run's")
	}
	if after, _ := api.snapshot(); len(after) != 1000 || sumCalls(after) != 1000 {
		t.Errorf("the sandbox replay called the API: %d calls, want 1000", sumCalls(after))
	}
}

// TestMapHTTPFailThenResume: with the fail policy the 422 fails the map
// step and the run with the item's class; once the API is fixed,
// resumeRun calls only the failed item again (and the items the failure
// cancelled, for the first time): every key is called once, the failed
// item's twice.
func TestMapHTTPFailThenResume(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-fail")
	api := newMapAPI(t, 500)
	wf, _ := deployWorkflow(t, f, "map-fail", mapHTTPDef(api.srv.URL, "fail", 1000))
	id := engStart(t, f.owner, f, wf, nil)
	run := waitMapRun(t, f.owner, id, "failed")
	if get(run, "error.class") != "permanent" || get(run, "error.stepID") != "each" || !strings.Contains(str(run, "error.message"), "map item 500") {
		t.Fatalf("run error = %v, want permanent at each naming map item 500", run["error"])
	}
	each := stepOf(run, "each")
	if each["status"] != "failed" || get(each, "items.failed") != float64(1) {
		t.Fatalf("map step = %v", each)
	}

	api.failAt.Store(-1) // "fix" the API
	f.owner.ok(mEngResume, map[string]any{"id": id})
	run = waitMapRun(t, f.owner, id, "succeeded")
	out, _ := run["output"].([]any)
	if len(out) != 1000 || get(out[500], "body.double") != float64(1000) {
		t.Fatalf("output after resume: %d entries, item 500 = %v", len(out), out[500])
	}
	calls, keys := api.snapshot()
	if len(calls) != 1000 {
		t.Errorf("%d distinct Idempotency-Keys, want 1000", len(calls))
	}
	for k, n := range calls {
		want := 1
		if keys[k] == 500 {
			want = 2
		}
		if n != want {
			t.Errorf("item %d called %d times, want %d", keys[k], n, want)
		}
	}
	if get(stepOf(run, "each"), "items.succeeded") != float64(1000) {
		t.Errorf("items after resume = %v", stepOf(run, "each")["items"])
	}
}

// TestMapTransforms maps 1,000 transforms (evaluated in the map step's
// claim, in item order, with ints staying ints), records a failing item's
// error under continue, and fails a list of 10,001 items with a clear error.
func TestMapTransforms(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-transform")
	def := engDef(nil, "steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "lists.range(1000).map(i, {'n': i, 'name': 'item-' + string(i)})",
			"step": map[string]any{"type": "transform", "output": map[string]any{"i": "index", "sq": "item.n * item.n", "name": "item.name.upperAscii()", "half": "double(item.n) / 2.0"}}})
	wf, _ := deployWorkflow(t, f, "map-transform", def)
	start := time.Now()
	run := waitMapRun(t, f.owner, engStart(t, f.owner, f, wf, nil), "succeeded")
	t.Logf("1,000-item map of transforms: %s from startRun to seeing it succeeded", time.Since(start))
	out, _ := run["output"].([]any)
	if len(out) != 1000 {
		t.Fatalf("output has %d entries, want 1000", len(out))
	}
	for i, e := range out {
		if get(e, "i") != float64(i) || get(e, "sq") != float64(i*i) || get(e, "name") != fmt.Sprintf("ITEM-%d", i) || get(e, "half") != float64(i)/2 {
			t.Fatalf("item %d = %v", i, e)
		}
	}
	if items := stepOf(run, "each")["items"]; items != nil {
		t.Errorf("a map of transforms keeps no item rows, items = %v", items)
	}

	cont := engDef(nil, "steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "[1, 2, 0, 4]", "failurePolicy": "continue",
			"step": map[string]any{"type": "transform", "output": "12 / item"}})
	wf2, _ := deployWorkflow(t, f, "map-continue-transform", cont)
	run = waitMapRun(t, f.owner, engStart(t, f.owner, f, wf2, nil), "succeeded")
	out, _ = run["output"].([]any)
	if len(out) != 4 || out[0] != float64(12) || out[1] != float64(6) || out[3] != float64(3) || get(out[2], "error.class") != "permanent" ||
		!strings.Contains(str(out[2], "error.message"), "division by zero") {
		t.Errorf("continue output = %v, want [12, 6, {error: {class: permanent, ...division by zero}}, 3]", out)
	}

	big := engDef(nil, "", map[string]any{"id": "each", "type": "map", "items": "lists.range(10001)",
		"step": map[string]any{"type": "transform", "output": "item"}})
	wf3, _ := deployWorkflow(t, f, "map-big", big)
	run = waitMapRun(t, f.owner, engStart(t, f.owner, f, wf3, nil), "failed")
	if get(run, "error.class") != "permanent" || !strings.Contains(str(run, "error.message"), "the list has 10001 items; a map step takes at most 10000") {
		t.Errorf("10,001 items: run error = %v", run["error"])
	}

	// The items' outputs together are bounded like one step output.
	huge := engDef(nil, "", map[string]any{"id": "each", "type": "map", "items": "lists.range(1000)",
		"step": map[string]any{"type": "transform", "output": "lists.range(1000).map(i, 'abcdefghij')"}})
	wf4, _ := deployWorkflow(t, f, "map-huge", huge)
	run = waitMapRun(t, f.owner, engStart(t, f.owner, f, wf4, nil), "failed")
	if get(run, "error.class") != "limit" || !strings.Contains(str(run, "error.message"), "8 MiB a step output may store") {
		t.Errorf("outputs over 8 MiB: run error = %v", run["error"])
	}
}

// TestMapBadInput: bad map steps are refused at create with VALIDATION and
// the JSON path, and nothing is written.
func TestMapBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-bad")
	c := newClient(t, 1, f.owner.token)
	wfID := str(c.ok(mCreateWF, map[string]any{"n": "Map bad", "s": "map-bad"}), "createWorkflow.id")
	inner := `"step":{"type":"transform","output":"item"}`
	tests := []struct{ name, step, path string }{
		{"missing items", `{"id":"m","type":"map",` + inner + `}`, "$.steps[0].items"},
		{"missing step", `{"id":"m","type":"map","items":"[1]"}`, "$.steps[0].step"},
		{"concurrency 0", `{"id":"m","type":"map","items":"[1]","concurrency":0,` + inner + `}`, "$.steps[0].concurrency"},
		{"concurrency 101", `{"id":"m","type":"map","items":"[1]","concurrency":101,` + inner + `}`, "$.steps[0].concurrency"},
		{"bad failurePolicy", `{"id":"m","type":"map","items":"[1]","failurePolicy":"skip",` + inner + `}`, "$.steps[0].failurePolicy"},
		{"inner id", `{"id":"m","type":"map","items":"[1]","step":{"id":"x","type":"transform","output":"item"}}`, "$.steps[0].step.id"},
		{"inner needs", `{"id":"m","type":"map","items":"[1]","step":{"type":"transform","needs":["m"],"output":"item"}}`, "$.steps[0].step.needs"},
		{"nested map", `{"id":"m","type":"map","items":"[1]","step":{"type":"map","items":"[1]",` + inner + `}}`, "$.steps[0].step.type"},
		{"inner approval", `{"id":"m","type":"map","items":"[1]","step":{"type":"approval","approvers":{"roles":["admin"]}}}`, "$.steps[0].step.type"},
		{"bad items expression", `{"id":"m","type":"map","items":"[1,",` + inner + `}`, "$.steps[0].items"},
		{"item outside a map", `{"id":"m","type":"transform","output":"item"}`, "$.steps[0].output"},
		{"retry on the map", `{"id":"m","type":"map","items":"[1]","retry":{"maxAttempts":2},` + inner + `}`, "$.steps[0].retry"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newClient(t, i, f.owner.token).fail("VALIDATION", mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, defSteps(tt.step))})
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want a problem at %s, got %s", tt.path, r.Raw)
			}
		})
	}
	d := c.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { versions { totalCount } } } }`, map[string]any{"id": wfID})
	if n := get(d, "node.versions.totalCount"); n != float64(0) {
		t.Errorf("%v versions written, want none", n)
	}

	// A deploy checks the inner step's credential like a step's own.
	v := str(c.ok(mCreateVer, map[string]any{"w": wfID, "d": defJSON(t, defSteps(
		`{"id":"m","type":"map","items":"[1]","step":{"type":"http","credential":"nope","request":{"method":"GET","url":"https://x.example/"}}}`))}), "createWorkflowVersion.id")
	c.ok(mPublish, map[string]any{"id": v})
	r := c.fail("VALIDATION", mDeploy, map[string]any{"v": v, "e": f.envID})
	if !hasProblemAt(r, "$.steps[0].step.credential") {
		t.Errorf("deploy with a missing inner credential: want a problem at $.steps[0].step.credential, got %s", r.Raw)
	}
}

// TestMapItemsIsolation: another tenant sees neither the run nor its map
// items, through GraphQL and through the app role's SQL under its tenant.
func TestMapItemsIsolation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-iso")
	api := newMapAPI(t, -1)
	wf, _ := deployWorkflow(t, f, "map-iso", mapHTTPDef(api.srv.URL, "fail", 5))
	id := engStart(t, f.owner, f, wf, nil)
	run := waitMapRun(t, f.owner, id, "succeeded")
	if get(stepOf(run, "each"), "items.total") != float64(5) {
		t.Fatalf("items = %v", stepOf(run, "each")["items"])
	}
	other := newFixture(t, "map-iso-other")
	if n := get(other.owner.ok(qMapRun, map[string]any{"id": id}), "node"); n != nil {
		t.Errorf("another tenant reads the run: %v", n)
	}
	// A key scoped to another environment of the same tenant reads neither
	// the run nor its items by id.
	qItem := `query($id: ID!) { node(id: $id) { ... on MapItem { id index } } }`
	items := mapItemsOf(t, f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Run { steps { stepID
		mapItems(first: 1) { totalCount edges { node { id } } } } } } }`, map[string]any{"id": id}))
	if len(items) != 1 || get(f.owner.ok(qItem, map[string]any{"id": items[0]["id"]}), "node.id") != items[0]["id"] {
		t.Fatalf("the owner's items: %v", items)
	}
	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "prod-only", roles: [OPERATOR], environmentID: $e}) { token } }`, map[string]any{"e": f.prodEnvID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	if n := get(scoped.ok(qMapRun, map[string]any{"id": id}), "node"); n != nil {
		t.Errorf("a key of another environment reads the run: %v", n)
	}
	if n := get(scoped.ok(qItem, map[string]any{"id": items[0]["id"]}), "node"); n != nil {
		t.Errorf("a key of another environment reads a map item: %v", n)
	}
	db := appDB(t)
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`SELECT set_config('app.tenant_id', $1, true)`, other.tenantID); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM map_items WHERE run_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("another tenant's transaction sees %d map items of the run", n)
	}
	if _, err := tx.Exec(`SELECT set_config('app.tenant_id', $1, true)`, f.tenantID); err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(`SELECT count(*) FROM map_items WHERE run_id = $1`, id).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Errorf("the run's own tenant sees %d map items, want 5", n)
	}
}

func waitMapRun(t *testing.T, c *client, id string, want string) map[string]any {
	t.Helper()
	var last map[string]any
	eventually(t, 60*time.Second, func() (bool, string) {
		last, _ = get(c.ok(qMapRun, map[string]any{"id": id}), "node").(map[string]any)
		s := str(last, "status")
		if s != want && (s == "succeeded" || s == "failed" || s == "cancelled") {
			t.Fatalf("run %s ended %s, want %s: %v", id, s, want, last["error"])
		}
		return s == want, fmt.Sprintf("run %s is %s, not %s", id, s, want)
	})
	return last
}

// mapItemsOf returns the map items of the run's "each" step in a mapItems
// query's answer.
func mapItemsOf(t *testing.T, data map[string]any) []map[string]any {
	t.Helper()
	list, _ := get(data, "node.steps").([]any)
	for _, s := range list {
		if get(s, "stepID") == "each" {
			return edges(s, "mapItems")
		}
	}
	t.Fatalf("no step each in %v", data)
	return nil
}

func sumCalls(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestMapLLMItems asks a model once per item: each call carries its item,
// is priced and recorded as a model call, and the map step's cost (the sum
// of its items') is the run's.
func TestMapLLMItems(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "map-llm")
	ai := newScriptServer(t)
	ai.script(openAIPath, openAIAnswer("done"))
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "model", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	wf, _ := deployWorkflow(t, f, "map-llm", engDef(nil, "steps.each.output",
		map[string]any{"id": "each", "type": "map", "items": "['a', 'b', 'c', 'd', 'e']", "concurrency": 2,
			"step": map[string]any{"type": "llm", "credential": "model", "model": "gpt-4o", "maxTokens": 50,
				"messages": []any{map[string]any{"role": "user", "content": "Summarize ticket {{ index }}: {{ item }}"}}}}))
	id := engStart(t, f.owner, f, wf, nil)
	run := waitMapRun(t, f.owner, id, "succeeded")
	out, _ := run["output"].([]any)
	if len(out) != 5 {
		t.Fatalf("output = %v", run["output"])
	}
	for i, o := range out {
		if get(o, "text") != "done" {
			t.Errorf("output[%d] = %v", i, o)
		}
	}
	reqs := ai.calls(openAIPath)
	if len(reqs) != 5 {
		t.Fatalf("the model got %d requests, want 5", len(reqs))
	}
	seen := map[string]bool{}
	for _, r := range reqs {
		msgs, _ := requestBody(t, r)["messages"].([]any)
		if len(msgs) > 0 {
			seen[str(msgs[len(msgs)-1], "content")] = true
		}
	}
	for i, item := range []string{"a", "b", "c", "d", "e"} {
		if !seen[fmt.Sprintf("Summarize ticket %d: %s", i, item)] {
			t.Errorf("no request for item %d (%s): %v", i, item, seen)
		}
	}
	cost, _ := run["costMicroUSD"].(float64)
	stepList, _ := get(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Run { steps { stepID costMicroUSD } } } }`, map[string]any{"id": id}), "node.steps").([]any)
	var stepCost any
	if len(stepList) == 1 {
		stepCost = get(stepList[0], "costMicroUSD")
	}
	if cost <= 0 || stepCost != cost {
		t.Errorf("run cost %v, map step cost %v: want equal and positive", cost, stepCost)
	}
	mc := f.owner.ok(qRunModelCalls, map[string]any{"r": id})
	if get(mc, "modelCalls.totalCount") != float64(5) {
		t.Errorf("model calls: %v", mc)
	}
	var sum float64
	for _, e := range edges(mc, "modelCalls") {
		sum += get(e, "costMicroUSD").(float64)
	}
	if sum != cost {
		t.Errorf("model calls cost %v in total, the run %v", sum, cost)
	}
}
