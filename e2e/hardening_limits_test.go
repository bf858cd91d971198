package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The page cap (README "Errors and limits"): first/last above it are
// clamped to it; a connection asked for neither returns the default page.
const (
	maxPageSize     = 200
	defaultPageSize = 100
)

// limitsStack is an API process whose app-role connections pass through a
// counting proxy, with a small response budget.
func limitsStack(t *testing.T) (*stack, *tcpProxy) {
	t.Helper()
	px := newTCPProxy(t, pgTarget(), true, true)
	st := newStack(t, 0,
		"DATABASE_APP_URL="+withHost(suite.appURL, px.addr),
		"SLUICE_MAX_RESPONSE_BYTES=65536", "SLUICE_DB_MAX_CONNS=4")
	return st, px
}

// TestHardeningQueryLimits: list sizes count in the complexity (the attack
// query of 10 aliases is refused before any SQL runs), first/last are clamped
// to the cap (no page exceeds it), a response larger than the byte budget is an error instead of
// gigabytes, and child lists (steps, attempts, events) load in one query per
// level, not one per parent.
func TestHardeningQueryLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "limits")
	st, px := limitsStack(t)
	c := f.owner.on(st.server)

	// 20 finished runs, each with a 4 KB input, started through the suite.
	var runIDs []string
	for i := range 20 {
		r := f.owner.ok(`mutation($w: ID!, $e: ID!, $in: Map) { startRun(input: {workflowID: $w, environmentID: $e, input: $in}) { id } }`,
			map[string]any{"w": f.workflowID, "e": f.envID, "in": map[string]any{"name": fmt.Sprintf("%d-%s", i, strings.Repeat("x", 4000))}})
		runIDs = append(runIDs, str(r, "startRun.id"))
	}
	for _, id := range runIDs {
		waitRun(t, f.owner, id, 60*time.Second, "succeeded")
	}

	statements := func(q string, vars map[string]any) (*result, int64) {
		t.Helper()
		before := px.statements.Load()
		r := c.do(q, vars)
		return r, px.statements.Load() - before
	}

	t.Run("alias attack refused by complexity", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("{")
		for i := range 10 {
			fmt.Fprintf(&b, ` a%d: runs(first: 100) { edges { node { input output steps { output attemptList { calls { host path } } } events(first: 100) { seq type data } } } }`, i)
		}
		b.WriteString(" }")
		r, n := statements(b.String(), nil)
		if r.Code() != "VALIDATION" || r.Errors[0].Extensions["reason"] != "COMPLEXITY_LIMIT_EXCEEDED" {
			t.Fatalf("want VALIDATION (COMPLEXITY_LIMIT_EXCEEDED), got %s", tail(r.Raw, 500))
		}
		if r.Data != nil && len(r.Data) > 0 {
			t.Errorf("refused query returned data")
		}
		if n > 10 { // its transaction's begin, set_config and rollback, and slack for background work
			t.Errorf("a refused query ran %d statements", n)
		}
		// One alias, as the review sent it (first: 1000), is refused too.
		one := `{ runs(first: 1000) { edges { node { input output steps { output attemptList { calls { host path } } } events(first: 1000) { seq type data } } } } }`
		if r := c.do(one, nil); r.Code() != "VALIDATION" {
			t.Errorf("single alias: want VALIDATION, got %s", tail(r.Raw, 500))
		}
	})

	t.Run("a page never exceeds the cap", func(t *testing.T) {
		// 210 workflows (plus the fixture's): more than the cap.
		for batch := range 5 {
			var b strings.Builder
			b.WriteString("mutation {")
			for i := range 42 {
				fmt.Fprintf(&b, ` w%d: createWorkflow(input: {name: "W", slug: "w-%d-%d"}) { id }`, i, batch, i)
			}
			b.WriteString(" }")
			f.owner.ok(b.String(), nil)
		}
		// first and last above the cap are clamped to it.
		for _, q := range []string{
			`{ workflows(first: 10000) { edges { node { id } } pageInfo { hasNextPage } } }`,
			`{ workflows(last: 10000) { edges { node { id } } pageInfo { hasPreviousPage } } }`,
		} {
			d := c.ok(q, nil)
			if got := len(edges(d, "workflows")); got != maxPageSize {
				t.Errorf("%s: %d nodes, want the cap %d", q, got, maxPageSize)
			}
			if get(d, "workflows.pageInfo.hasNextPage") == false || get(d, "workflows.pageInfo.hasPreviousPage") == false {
				t.Errorf("%s: the page does not say there is more: %v", q, get(d, "workflows.pageInfo"))
			}
		}
		d := c.ok(`{ workflows { totalCount edges { node { id } } } }`, nil)
		if got := len(edges(d, "workflows")); got != defaultPageSize {
			t.Errorf("workflows without first: %d nodes, want the default page %d (totalCount %v)", got, defaultPageSize, get(d, "workflows.totalCount"))
		}
		d = c.ok(`{ workflows(first: 200) { edges { node { id } } pageInfo { hasNextPage } } }`, nil)
		if got := len(edges(d, "workflows")); got != maxPageSize || get(d, "workflows.pageInfo.hasNextPage") != true {
			t.Errorf("workflows(first: 200): %d nodes, hasNextPage %v", got, get(d, "workflows.pageInfo.hasNextPage"))
		}
		ids := make([]string, maxPageSize+1)
		for i := range ids {
			ids[i] = f.workflowID
		}
		if r := c.do(`query($ids: [ID!]!) { nodes(ids: $ids) { id } }`, map[string]any{"ids": ids}); r.Code() != "VALIDATION" || r.Errors[0].Extensions["path"] != "ids" {
			t.Errorf("nodes with %d ids: want VALIDATION at ids, got %.300s", len(ids), r.Raw)
		}
		d = c.ok(`{ auditLogs { edges { node { id } } } }`, nil)
		if got := len(edges(d, "auditLogs")); got > defaultPageSize {
			t.Errorf("auditLogs without first: %d nodes", got)
		}
	})

	t.Run("dashboard query passes with batched child lists", func(t *testing.T) {
		q := `{ runs(first: 50) { totalCount edges { node { id status costUSD createdAt
			workflow { name } environment { name }
			steps { stepID status attempts error { class message } attemptList { number status calls { host path } } }
			events(first: 5) { seq type } } } } }`
		r, n := statements(q, nil)
		if len(r.Errors) > 0 {
			t.Fatalf("dashboard query refused: %s", tail(r.Raw, 800))
		}
		runs := edges(r.Data, "runs")
		if len(runs) != 20 {
			t.Fatalf("want 20 runs, got %d", len(runs))
		}
		for _, run := range runs {
			if steps, _ := run["steps"].([]any); len(steps) != 2 {
				t.Fatalf("run %v: %d steps", run["id"], len(steps))
			}
			if evs, _ := run["events"].([]any); len(evs) != 5 {
				t.Fatalf("run %v: %d events", run["id"], len(evs))
			}
		}
		// One query per level: about a dozen statements, not several per
		// run (before batching: 107 for these 20 runs).
		t.Logf("dashboard query over 20 runs: %d statements", n)
		if n > 30 {
			t.Errorf("dashboard query over 20 runs ran %d statements: child lists are not batched", n)
		}
	})

	t.Run("response budget", func(t *testing.T) {
		// 20 inputs of 4 KB are more than the stack's 64 KiB budget.
		r, _ := statements(`{ runs(first: 50) { edges { node { id input } } } }`, nil)
		if r.Code() != "VALIDATION" || r.Errors[0].Extensions["reason"] != "RESPONSE_TOO_LARGE" {
			t.Fatalf("want VALIDATION (RESPONSE_TOO_LARGE), got %s", tail(r.Raw, 500))
		}
		if len(r.Raw) > 65536 {
			t.Errorf("the refusal is %d bytes", len(r.Raw))
		}
		if len(r.Errors) != 1 {
			t.Errorf("want one error, got %d", len(r.Errors))
		}
	})
}
