package e2e

import (
	"slices"
	"testing"
)

// TestWebhookEndpointChangesApplyAtOnce: workers cache a tenant's endpoint
// list by a version every endpoint change bumps, so each change applies to
// the very next run, whichever worker records it: a new endpoint gets its
// events, a disabled one none, a narrowed one only its types, a deleted one
// nothing more.
func TestWebhookEndpointChangesApplyAtOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-cache")
	srv := newScriptServer(t)
	db := ownerDB(t)
	deliveries := func() []string {
		t.Helper()
		id := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "ada"})
		engFinish(t, f.owner, id, "succeeded")
		rows, err := db.Query(`SELECT endpoint_id || ' ' || event_type FROM webhook_deliveries WHERE run_id = $1 ORDER BY 1`, id)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	// Warm every worker's cache with the empty list.
	for range 4 {
		if got := deliveries(); len(got) != 0 {
			t.Fatalf("deliveries with no endpoint: %v", got)
		}
	}
	a, _ := hookEndpoint(t, f.owner, srv.URL+"/hooks/a")
	if got := deliveries(); !slices.Equal(got, []string{a + " run.started", a + " run.succeeded"}) {
		t.Fatalf("after creating an endpoint: %v", got)
	}
	f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": a, "enabled": false}})
	if got := deliveries(); len(got) != 0 {
		t.Fatalf("after disabling it: %v", got)
	}
	f.owner.ok(mHookUpdate, map[string]any{"in": map[string]any{"id": a, "enabled": true, "eventTypes": []string{"run.succeeded"}}})
	if got := deliveries(); !slices.Equal(got, []string{a + " run.succeeded"}) {
		t.Fatalf("after enabling it for run.succeeded only: %v", got)
	}
	f.owner.ok(mHookDelete, map[string]any{"id": a})
	b, _ := hookEndpoint(t, f.owner, srv.URL+"/hooks/b", "run.started")
	if got := deliveries(); !slices.Equal(got, []string{b + " run.started"}) {
		t.Fatalf("after replacing it: %v", got)
	}
}
