package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/idempotency"
)

const (
	mBulk = `mutation($in: BulkRunActionInput!) { bulkRunAction(input: $in) {
		dryRun { count runIDs needsConfirmLarge }
		operation { id status action total done succeeded failed skipped pending } } }`
	qBulkOp = `query($id: ID!) { bulkOperation(id: $id) { id status total done succeeded failed skipped pending
		items(first: 5) { totalCount edges { node { status message run { id status } } } } } }`
	mCancelBulk = `mutation($id: ID!) { cancelBulkOperation(id: $id) { id status done skipped pending } }`
)

// partner is a fake HTTP partner that is down (503) until it comes back,
// then answers 200 once per Idempotency-Key and counts every key it was
// sent while up.
type partner struct {
	*httptest.Server
	up   atomic.Bool
	mu   sync.Mutex
	seen map[string]int    // Idempotency-Key -> 2xx answers
	path map[string]string // Idempotency-Key -> path of its last 2xx answer
	down atomic.Int64      // 503 answers
}

func newPartner(t *testing.T) *partner {
	p := &partner{seen: map[string]int{}, path: map[string]string{}}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.up.Load() {
			p.down.Add(1)
			http.Error(w, "partner outage", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		p.seen[r.Header.Get("Idempotency-Key")]++
		p.path[r.Header.Get("Idempotency-Key")] = r.URL.Path
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *partner) answered(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen[key]
}

func (p *partner) keys() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.seen)
}

// partnerDefinition is one side-effect http step to the partner, with a
// retry policy small enough that an outage exhausts it at once.
func partnerDefinition(url string) map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{map[string]any{
			"id": "notify", "type": "http", "sideEffect": true, "timeout": "10s",
			"request": map[string]any{"method": "POST", "url": url + "/notify", "body": map[string]any{"n": "{{ input.n }}"}},
			"retry":   map[string]any{"maxAttempts": 2, "initialInterval": "100ms", "maxInterval": "200ms"},
		}},
	}
}

func bulkOp(t *testing.T, g *client, id string) map[string]any {
	t.Helper()
	op, _ := g.ok(qBulkOp, map[string]any{"id": id})["bulkOperation"].(map[string]any)
	if op == nil {
		t.Fatalf("bulk operation %s not found", id)
	}
	return op
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// TestBulkResumeAfterPartnerOutage: 300 runs fail against a partner that
// is down (transient, retries exhausted); a dry run of RESUME by failure
// class counts 300 and writes nothing; once the partner is back the real
// operation resumes every run exactly once while its only worker is
// SIGKILLed and Redis wiped mid-operation; progress reaches 300/300 (also
// through bulkOperationUpdated), each run is audited once, and another
// tenant can name none of it.
func TestBulkResumeAfterPartnerOutage(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1, "SLUICE_BULK_RATE=50", "SLUICE_BULK_INTERVAL=200ms")
	f := st.fixture(t, "bulk")
	g := f.owner.on(st.server)
	p := newPartner(t)
	db := st.ownerDB(t)

	wf, err := g.deployDef(f.envID, "bulk-partner", partnerDefinition(p.URL))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	runIDs, err := g.startRuns(wf, f.envID, n, 8, 0, func(i int) map[string]any { return map[string]any{"n": i} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	statuses, err := g.waitTerminal(runIDs, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for id, s := range statuses {
		if s != "failed" {
			t.Fatalf("run %s is %s during the outage, want failed", id, s)
		}
	}
	// The dead-letter view offers the filter that takes them.
	dl := g.ok(`query($w: ID!) { deadLetter(workflowID: $w) { class count bulkFilter { workflowID status failureClass } } }`, map[string]any{"w": wf})
	groups := get(dl, "deadLetter").([]any)
	if len(groups) != 1 || str(groups[0], "class") != "transient" || num(get(groups[0], "count")) != n ||
		str(groups[0], "bulkFilter.failureClass") != "transient" || str(groups[0], "bulkFilter.workflowID") != wf {
		t.Fatalf("dead letter: %v", groups)
	}

	filter := map[string]any{"failureClass": "transient"}
	dry := g.ok(mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "filter": filter, "dryRun": true}})
	if num(get(dry, "bulkRunAction.dryRun.count")) != n || get(dry, "bulkRunAction.operation") != nil ||
		len(get(dry, "bulkRunAction.dryRun.runIDs").([]any)) != 100 || get(dry, "bulkRunAction.dryRun.needsConfirmLarge") != false {
		t.Fatalf("dry run: %v", dry)
	}
	var ops int
	if err := db.QueryRow(`SELECT count(*) FROM bulk_operations WHERE tenant_id = $1`, f.tenantID).Scan(&ops); err != nil || ops != 0 {
		t.Fatalf("a dry run wrote %d operations (%v)", ops, err)
	}

	p.up.Store(true)
	began := time.Now()
	created := g.ok(mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "filter": filter}})
	opID := str(created, "bulkRunAction.operation.id")
	if num(get(created, "bulkRunAction.operation.total")) != n {
		t.Fatalf("operation: %v", created)
	}
	// Progress streams to a subscriber.
	ws := connectWS(t, st.server, wsBearer(token(t, f.tenantID, "viewer")))
	ws.subscribe("bulk", `subscription($id: ID!) { bulkOperationUpdated(id: $id) { id status done succeeded total } }`, map[string]any{"id": opID})

	// Mid-operation, the only worker dies and Redis is wiped.
	eventually(t, 60*time.Second, func() (bool, string) {
		op := bulkOp(t, g, opID)
		return num(op["done"]) >= 40, fmt.Sprintf("operation: %v", op)
	})
	wk := st.workers[0]
	if err := wk.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-wk.done
	mid := bulkOp(t, g, opID)
	if num(mid["done"]) >= n {
		t.Fatalf("the operation finished before the kill (rate too high for the test): %v", mid)
	}
	t.Logf("worker killed with %d of %d runs done", num(mid["done"]), n)
	rdb := st.redis()
	defer rdb.Close()
	if err := rdb.FlushDB(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw

	eventually(t, 2*time.Minute, func() (bool, string) {
		op := bulkOp(t, g, opID)
		return str(op, "status") == "COMPLETED", fmt.Sprintf("operation: %v", op)
	})
	// The rate holds: 50 runs a second cannot do 300 in under 6s.
	if took := time.Since(began); took < 5*time.Second {
		t.Errorf("300 runs at SLUICE_BULK_RATE=50 took %s", took)
	}
	op := bulkOp(t, g, opID)
	if num(op["done"]) != n || num(op["succeeded"]) != n || num(op["failed"]) != 0 || num(op["skipped"]) != 0 || num(op["pending"]) != 0 {
		t.Fatalf("operation at the end: %v", op)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for last := ""; last != "COMPLETED"; {
		frame, err := ws.next(ctx, "bulk")
		if err != nil || frame.Type != "next" || str(frame.Data, "bulkOperationUpdated.id") != opID {
			t.Fatalf("bulkOperationUpdated: %v %+v (last status %s)", err, frame, last)
		}
		last = str(frame.Data, "bulkOperationUpdated.status")
		if last == "COMPLETED" && num(get(frame.Data, "bulkOperationUpdated.done")) != n {
			t.Fatalf("bulkOperationUpdated completed at %v", frame.Data)
		}
	}

	statuses, err = g.waitTerminal(runIDs, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for id, s := range statuses {
		if s != "succeeded" {
			t.Errorf("run %s is %s after the bulk resume", id, s)
		}
	}
	// Each run reached the partner with its key, and was resumed once. A
	// call in flight when the worker was killed is made again with the same
	// key (at least once: the partner dedupes by the key), so only the
	// calls the worker had in flight may repeat: at most its 10 task slots
	// and 2 woken-step slots (SLUICE_WORKER_CONCURRENCY=10).
	repeated := 0
	for _, id := range runIDs {
		switch got := p.answered(idempotency.Key(id, "notify")); {
		case got == 0:
			t.Errorf("partner never answered run %s", id)
		case got > 1:
			repeated++
		}
	}
	if repeated > 12 {
		t.Errorf("%d runs reached the partner more than once, want at most the 12 calls a killed worker can have in flight", repeated)
	}
	t.Logf("%d runs' calls were repeated after the kill (same key)", repeated)
	if p.keys() != n {
		t.Errorf("partner saw %d keys, want %d", p.keys(), n)
	}
	var resumed, audited, doubles int
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT run_id) FROM run_events WHERE tenant_id = $1 AND type = 'run.resumed'`, f.tenantID).Scan(&resumed, &doubles); err != nil {
		t.Fatal(err)
	}
	if resumed != n || doubles != n {
		t.Errorf("run.resumed events: %d over %d runs, want %d once each", resumed, doubles, n)
	}
	if err := db.QueryRow(`SELECT count(DISTINCT target_id) FROM audit_logs WHERE tenant_id = $1 AND action = 'run.resume' AND metadata->>'bulkOperationID' = $2`,
		f.tenantID, opID).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	var entries int
	_ = db.QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'run.resume'`, f.tenantID).Scan(&entries)
	if audited != n || entries != n {
		t.Errorf("run.resume audit entries: %d for %d runs, want one per run (%d)", entries, audited, n)
	}
	// A second pass changes nothing: the operation is over.
	g.fail("CONFLICT", mCancelBulk, map[string]any{"id": opID})

	// Another tenant: the operation and the runs answer as missing ones.
	other := st.fixture(t, "bulk-other")
	og := other.owner.on(st.server)
	if v := og.ok(qBulkOp, map[string]any{"id": opID})["bulkOperation"]; v != nil {
		t.Fatalf("other tenant reads the operation: %v", v)
	}
	if v := og.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": opID})["node"]; v != nil {
		t.Fatalf("other tenant's node: %v", v)
	}
	og.fail("NOT_FOUND", mCancelBulk, map[string]any{"id": opID})
	og.fail("NOT_FOUND", mCancelBulk, map[string]any{"id": "bop_01JZZZZZZZZZZZZZZZZZZZZZZZ"})
	og.fail("NOT_FOUND", mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "runIDs": []any{runIDs[0]}}})
	og.fail("NOT_FOUND", mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "filter": map[string]any{"workflowID": wf}, "dryRun": true}})
	if n := get(og.ok(`{ bulkOperations { totalCount } }`, nil), "bulkOperations.totalCount"); n != float64(0) {
		t.Fatalf("other tenant lists %v operations", n)
	}
	ows := connectWS(t, st.server, wsBearer(token(t, other.tenantID, "viewer")))
	ows.subscribe("x", `subscription($id: ID!) { bulkOperationUpdated(id: $id) { id } }`, map[string]any{"id": opID})
	frame, err := ows.next(ctx, "x")
	// gqlgen answers a resolver's refusal as a payload with errors and no data.
	if err != nil || (frame.Type != "error" && frame.Type != "next") || frame.Data["bulkOperationUpdated"] != nil || !containsCode(frame.Errors, "NOT_FOUND") {
		t.Fatalf("other tenant's subscription: %v %+v", err, frame)
	}
}

func containsCode(list []gqlError, code string) bool {
	for _, e := range list {
		if e.Extensions["code"] == code {
			return true
		}
	}
	return false
}

// errPath is the extensions.path of a response's first error.
func errPath(r *result) string {
	if len(r.Errors) == 0 {
		return ""
	}
	p, _ := r.Errors[0].Extensions["path"].(string)
	return p
}

// TestBulkBadInput: each bad bulk request is VALIDATION at its field path
// (or NOT_FOUND for ids that do not exist) and writes nothing; a filter
// over more than 10,000 runs needs confirmLarge; cancelling an operation
// skips its pending items; resumeRun on a version with other steps is
// refused at versionID, and with an inputPatch that breaks the schema at
// inputPatch.
func TestBulkBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bulk-bad")
	g := f.owner
	p := newPartner(t)
	db := ownerDB(t)
	wf, err := g.deployDef(f.envID, "bulk-bad", partnerDefinition(p.URL))
	if err != nil {
		t.Fatal(err)
	}
	run := str(g.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"n": 1}}), "startRun.id")
	waitRun(t, g, run, 60*time.Second, "failed")

	other := newFixture(t, "bulk-bad-other")
	otherRun := str(other.owner.ok(mStartRun, map[string]any{"w": other.workflowID, "e": other.envID, "i": map[string]any{"name": "x"}}), "startRun.id")
	draft := str(g.ok(mCreateVer, map[string]any{"w": wf, "d": partnerDefinition(p.URL)}), "createWorkflowVersion.id")

	cases := []struct {
		name, code, path string
		in               map[string]any
	}{
		{"neither", "VALIDATION", "input.filter", map[string]any{"action": "RESUME"}},
		{"both", "VALIDATION", "input.runIDs", map[string]any{"action": "RESUME", "runIDs": []any{run}, "filter": map[string]any{}}},
		{"empty ids", "VALIDATION", "input.runIDs", map[string]any{"action": "RESUME", "runIDs": []any{}}},
		{"repeated id", "VALIDATION", "input.runIDs[1]", map[string]any{"action": "RESUME", "runIDs": []any{run, run}}},
		{"resume succeeded", "VALIDATION", "input.filter.status[1]", map[string]any{"action": "RESUME", "filter": map[string]any{"status": []any{"failed", "succeeded"}}}},
		{"cancel failed", "VALIDATION", "input.filter.status[0]", map[string]any{"action": "CANCEL", "filter": map[string]any{"status": []any{"failed"}}}},
		{"cancel by class", "VALIDATION", "input.filter.failureClass", map[string]any{"action": "CANCEL", "filter": map[string]any{"failureClass": "transient"}}},
		{"empty class", "VALIDATION", "input.filter.failureClass", map[string]any{"action": "RESUME", "filter": map[string]any{"failureClass": ""}}},
		{"window", "VALIDATION", "input.filter.to", map[string]any{"action": "REPLAY", "filter": map[string]any{"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}}},
		{"cancel version", "VALIDATION", "input.options.versionID", map[string]any{"action": "CANCEL", "runIDs": []any{run}, "options": map[string]any{"versionID": draft}}},
		{"mode on resume", "VALIDATION", "input.options.mode", map[string]any{"action": "RESUME", "runIDs": []any{run}, "options": map[string]any{"mode": "SANDBOX"}}},
		{"sandbox patch", "VALIDATION", "input.options.inputPatch", map[string]any{"action": "REPLAY", "runIDs": []any{run}, "options": map[string]any{"mode": "SANDBOX", "inputPatch": map[string]any{"n": 2}}}},
		{"draft version", "VALIDATION", "input.options.versionID", map[string]any{"action": "REPLAY", "filter": map[string]any{"workflowID": wf}, "options": map[string]any{"versionID": draft}}},
		{"version without workflow", "VALIDATION", "input.options.versionID", map[string]any{"action": "REPLAY", "filter": map[string]any{"status": []any{"failed"}}, "options": map[string]any{"versionID": draft}}},
		{"nothing matches", "VALIDATION", "input.filter", map[string]any{"action": "CANCEL", "filter": map[string]any{"workflowID": wf}}},
		{"other tenant's run", "NOT_FOUND", "", map[string]any{"action": "RESUME", "runIDs": []any{run, otherRun}}},
		{"other tenant's workflow", "NOT_FOUND", "", map[string]any{"action": "RESUME", "filter": map[string]any{"workflowID": other.workflowID}}},
		{"other tenant's environment", "NOT_FOUND", "", map[string]any{"action": "RESUME", "filter": map[string]any{"environmentID": other.envID}}},
	}
	for _, c := range cases {
		r := g.fail(c.code, mBulk, map[string]any{"in": c.in})
		if c.path != "" && errPath(r) != c.path {
			t.Errorf("%s: error at %q, want %q: %s", c.name, errPath(r), c.path, r.Raw)
		}
	}
	viewer := newClient(t, 0, token(t, f.tenantID, "viewer"))
	viewer.fail("FORBIDDEN", mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "runIDs": []any{run}}})
	var ops, audits int
	if err := db.QueryRow(`SELECT (SELECT count(*) FROM bulk_operations WHERE tenant_id = $1), (SELECT count(*) FROM bulk_operation_items WHERE tenant_id = $1)`,
		f.tenantID).Scan(&ops, &audits); err != nil || ops+audits != 0 {
		t.Fatalf("bad input wrote %d operations, %d items (%v)", ops, audits, err)
	}
	if err := db.QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action LIKE 'bulk_operation.%'`, f.tenantID).Scan(&audits); err != nil || audits != 0 {
		t.Fatalf("bad input wrote %d audit entries (%v)", audits, err)
	}

	// resumeRun with options: a version with other steps, a patch that
	// breaks the input schema; the run stays failed.
	otherSteps := partnerDefinition(p.URL)
	otherSteps["steps"] = append(otherSteps["steps"].([]any), map[string]any{"id": "extra", "type": "transform", "needs": []any{"notify"}, "output": map[string]any{"x": "1"}})
	v2 := str(g.ok(mCreateVer, map[string]any{"w": wf, "d": otherSteps}), "createWorkflowVersion.id")
	g.ok(mPublish, map[string]any{"id": v2})
	mResume := `mutation($id: ID!, $v: ID, $p: Map) { resumeRun(id: $id, versionID: $v, inputPatch: $p) { id status } }`
	if r := g.fail("VALIDATION", mResume, map[string]any{"id": run, "v": v2}); errPath(r) != "versionID" {
		t.Errorf("resume on a version with other steps: %s", r.Raw)
	}
	if r := g.fail("VALIDATION", mResume, map[string]any{"id": run, "p": map[string]any{"n": "not a number"}}); errPath(r) != "inputPatch" {
		t.Errorf("resume with a patch that breaks the schema: %s", r.Raw)
	}
	waitRun(t, g, run, 10*time.Second, "failed")
	// A good patch resumes the run with the patched input (the partner is
	// still down: it fails again, having sent n = 7).
	got := g.ok(mResume, map[string]any{"id": run, "p": map[string]any{"n": 7}})
	if str(got, "resumeRun.status") != "running" && str(got, "resumeRun.status") != "queued" {
		t.Fatalf("resume with a patch: %v", got)
	}
	in := get(g.ok(`query($id: ID!) { node(id: $id) { ... on Run { input } } }`, map[string]any{"id": run}), "node.input")
	if get(in, "n") != float64(7) {
		t.Fatalf("patched input: %v", in)
	}
	waitRun(t, g, run, 60*time.Second, "failed")

	// More than 10,000 matching runs: copies of the failed run. The record
	// is built in a LATERAL join: as (f(x)).* in the select list, Postgres
	// would call f once per column (a minute of Postgres's time, not 5 s).
	if _, err := db.Exec(`INSERT INTO runs SELECT p.* FROM runs r CROSS JOIN generate_series(1, 10000) g
		CROSS JOIN LATERAL jsonb_populate_record(NULL::runs, to_jsonb(r) || jsonb_build_object('id', 'run_bulkbig' || lpad(g::text, 6, '0'), 'idempotency_key', NULL)) p
		WHERE r.id = $1`, run); err != nil {
		t.Fatal(err)
	}
	filter := map[string]any{"workflowID": wf, "failureClass": "transient"}
	dry := g.ok(mBulk, map[string]any{"in": map[string]any{"action": "REPLAY", "filter": filter, "dryRun": true}})
	if num(get(dry, "bulkRunAction.dryRun.count")) != 10_001 || get(dry, "bulkRunAction.dryRun.needsConfirmLarge") != true {
		t.Fatalf("dry run over 10,001 runs: %v", dry)
	}
	if r := g.fail("VALIDATION", mBulk, map[string]any{"in": map[string]any{"action": "REPLAY", "filter": filter}}); errPath(r) != "input.confirmLarge" {
		t.Errorf("over 10,000 without confirmLarge: %s", r.Raw)
	}
	if err := db.QueryRow(`SELECT count(*) FROM bulk_operations WHERE tenant_id = $1`, f.tenantID).Scan(&ops); err != nil || ops != 0 {
		t.Fatalf("refused large action wrote %d operations (%v)", ops, err)
	}
	// With confirmLarge it is created; cancelled at once, its items are
	// skipped (a suite worker may have acted on a few first).
	op := g.ok(mBulk, map[string]any{"in": map[string]any{"action": "REPLAY", "filter": filter, "confirmLarge": true, "options": map[string]any{"mode": "SANDBOX"}}})
	opID := str(op, "bulkRunAction.operation.id")
	if num(get(op, "bulkRunAction.operation.total")) != 10_001 {
		t.Fatalf("large operation: %v", op)
	}
	c := g.ok(mCancelBulk, map[string]any{"id": opID})
	if str(c, "cancelBulkOperation.status") != "CANCELLED" || num(get(c, "cancelBulkOperation.pending")) != 0 || num(get(c, "cancelBulkOperation.skipped")) < 9_000 {
		t.Fatalf("cancelled operation: %v", c)
	}
	g.fail("CONFLICT", mCancelBulk, map[string]any{"id": opID})
	if err := db.QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'bulk_operation.cancel' AND target_id = $2`, f.tenantID, opID).Scan(&audits); err != nil || audits != 1 {
		t.Fatalf("cancel audit entries: %d (%v)", audits, err)
	}
}

func waitBulk(t *testing.T, g *client, id string) map[string]any {
	t.Helper()
	var op map[string]any
	eventually(t, 90*time.Second, func() (bool, string) {
		op = bulkOp(t, g, id)
		return str(op, "status") == "COMPLETED", fmt.Sprintf("operation: %v", op)
	})
	return op
}

// TestBulkReplayAndCancel: a bulk REPLAY on another version with an input
// patch starts one run per source run, with the patched input and the key
// bulk:<operation>:<run>; a bulk CANCEL of waiting runs cancels each; a
// bulk RESUME of a run that did not fail skips it and says why. Each run
// acted on has one audit entry naming the operation.
func TestBulkReplayAndCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "bulk-replay")
	g := f.owner
	p := newPartner(t)
	db := ownerDB(t)
	wf, err := g.deployDef(f.envID, "bulk-replay", partnerDefinition(p.URL))
	if err != nil {
		t.Fatal(err)
	}
	var sources []string
	for i := range 3 {
		id := str(g.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"n": i}}), "startRun.id")
		waitRun(t, g, id, 60*time.Second, "failed")
		sources = append(sources, id)
	}
	v2 := newVersion(t, g, wf, partnerDefinition(p.URL+"/v2"))
	p.up.Store(true)
	created := g.ok(mBulk, map[string]any{"in": map[string]any{"action": "REPLAY", "runIDs": sources,
		"options": map[string]any{"versionID": v2, "inputPatch": map[string]any{"n": 42}}}})
	opID := str(created, "bulkRunAction.operation.id")
	op := waitBulk(t, g, opID)
	if num(op["succeeded"]) != 3 {
		t.Fatalf("replay operation: %v", op)
	}
	items := g.ok(`query($id: ID!) { bulkOperation(id: $id) { items { edges { node { status run { id } resultRun { id } } } } } }`, map[string]any{"id": opID})
	for _, e := range edges(items, "bulkOperation.items") {
		src, res := str(e, "run.id"), str(e, "resultRun.id")
		waitRun(t, g, res, 60*time.Second, "succeeded")
		d := g.ok(`query($id: ID!) { node(id: $id) { ... on Run { input idempotencyKey replayOf version { id } } } }`, map[string]any{"id": res})
		if str(d, "node.idempotencyKey") != "bulk:"+opID+":"+src {
			t.Errorf("replay %s of %s has idempotency key %v", res, src, get(d, "node.idempotencyKey"))
		}
		if get(d, "node.input.n") != float64(42) || str(d, "node.version.id") != v2 {
			t.Errorf("replay %s: %v", res, d)
		}
	}
	var audited int
	if err := db.QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'run.replay' AND metadata->>'bulkOperationID' = $2 AND actor = $3`,
		f.tenantID, opID, "bulk:"+opID).Scan(&audited); err != nil || audited != 3 {
		t.Fatalf("run.replay audit entries of the operation: %d (%v)", audited, err)
	}

	// RESUME of the failed sources on v2 (same steps, another URL) with a
	// patched input: each continues on v2 and calls its URL.
	resumeOp := str(g.ok(mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "filter": map[string]any{"workflowID": wf},
		"options": map[string]any{"versionID": v2, "inputPatch": map[string]any{"n": 9}}}}), "bulkRunAction.operation.id")
	if op := waitBulk(t, g, resumeOp); num(op["succeeded"]) != 3 {
		t.Fatalf("resume operation: %v", op)
	}
	for _, id := range sources {
		waitRun(t, g, id, 60*time.Second, "succeeded")
		d := g.ok(`query($id: ID!) { node(id: $id) { ... on Run { input version { id } } } }`, map[string]any{"id": id})
		if get(d, "node.input.n") != float64(9) || str(d, "node.version.id") != v2 {
			t.Errorf("resumed %s: %v", id, d)
		}
		p.mu.Lock()
		path := p.path[idempotency.Key(id, "notify")]
		p.mu.Unlock()
		if path != "/v2/notify" {
			t.Errorf("resumed %s called %q, want /v2/notify", id, path)
		}
	}

	// RESUME of a run that did not fail: skipped, with why.
	skip := str(g.ok(mBulk, map[string]any{"in": map[string]any{"action": "RESUME", "runIDs": []any{str(edges(items, "bulkOperation.items")[0], "resultRun.id")}}}), "bulkRunAction.operation.id")
	op = waitBulk(t, g, skip)
	msg := str(edges(bulkOp(t, g, skip), "items")[0], "message")
	if num(op["skipped"]) != 1 || num(op["succeeded"]) != 0 || msg == "" {
		t.Fatalf("resume of a succeeded run: %v (%q)", op, msg)
	}

	// CANCEL of waiting runs.
	appWF, _ := deployWorkflow(t, f, "bulk-approval", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}},
	}})
	var waiting []string
	for range 2 {
		id := str(g.ok(mStartRun, map[string]any{"w": appWF, "e": f.envID, "i": map[string]any{}}), "startRun.id")
		waitRun(t, g, id, 60*time.Second, "waiting")
		waiting = append(waiting, id)
	}
	filter := map[string]any{"workflowID": appWF}
	if n := num(get(g.ok(mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "filter": filter, "dryRun": true}}), "bulkRunAction.dryRun.count")); n != 2 {
		t.Fatalf("dry run of the cancel: %d runs", n)
	}
	cancelOp := str(g.ok(mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "filter": filter}}), "bulkRunAction.operation.id")
	if op := waitBulk(t, g, cancelOp); num(op["succeeded"]) != 2 {
		t.Fatalf("cancel operation: %v", op)
	}
	for _, id := range waiting {
		waitRun(t, g, id, 30*time.Second, "cancelled")
	}
	if err := db.QueryRow(`SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND action = 'run.cancel' AND metadata->>'bulkOperationID' = $2`,
		f.tenantID, cancelOp).Scan(&audited); err != nil || audited != 2 {
		t.Fatalf("run.cancel audit entries of the operation: %d (%v)", audited, err)
	}

	// A key scoped to development sees and takes development's runs only,
	// and not the operations made outside its environment.
	v := newVersion(t, g, appWF, map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "review", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}}}})
	g.ok(mDeploy, map[string]any{"v": v, "e": f.prodEnvID})
	prodRun := str(g.ok(mStartRun, map[string]any{"w": appWF, "e": f.prodEnvID, "i": map[string]any{}}), "startRun.id")
	devRun := str(g.ok(mStartRun, map[string]any{"w": appWF, "e": f.envID, "i": map[string]any{}}), "startRun.id")
	waitRun(t, g, prodRun, 60*time.Second, "waiting")
	waitRun(t, g, devRun, 60*time.Second, "waiting")
	key := g.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-only", roles: [OPERATOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	dry := scoped.ok(mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "filter": filter, "dryRun": true}})
	if ids := get(dry, "bulkRunAction.dryRun.runIDs").([]any); len(ids) != 1 || ids[0] != devRun {
		t.Fatalf("a development key's dry run: %v", dry)
	}
	scoped.fail("NOT_FOUND", mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "runIDs": []any{prodRun}}})
	scoped.fail("NOT_FOUND", mBulk, map[string]any{"in": map[string]any{"action": "CANCEL", "filter": map[string]any{"environmentID": f.prodEnvID}}})
	if v := scoped.ok(qBulkOp, map[string]any{"id": cancelOp})["bulkOperation"]; v != nil {
		t.Fatalf("a development key reads an operation made outside it: %v", v)
	}
	scoped.fail("NOT_FOUND", mCancelBulk, map[string]any{"id": cancelOp})
	waitRun(t, g, prodRun, 5*time.Second, "waiting")
}
