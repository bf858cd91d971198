package e2e

import (
	"testing"
)

// TestNodesBatchesByType reads several objects of a few types in one
// nodes(ids:) call, as a client polling its runs does: the answer keeps the
// order of the ids (a repeat included), unknown ids of a known type and
// ids of no type are null, and nothing is reported as an error.
func TestNodesBatchesByType(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "nodes")
	wf, _ := deployWorkflow(t, f, "nodes", engDef(nil, "", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	var runs []string
	for range 3 {
		runs = append(runs, engStart(t, f.owner, f, wf, map[string]any{}))
	}
	missingRun := runs[0][:len(runs[0])-4] + "zzzz"
	ids := []string{runs[2], missingRun, wf, runs[0], "zzz_1", runs[1], runs[2], f.envID}
	r := f.owner.do(`query($ids: [ID!]!) { nodes(ids: $ids) { id __typename } }`, map[string]any{"ids": ids})
	if len(r.Errors) != 0 {
		t.Fatalf("errors: %s", r.Raw)
	}
	list, _ := get(r.Data, "nodes").([]any)
	if len(list) != len(ids) {
		t.Fatalf("%d nodes for %d ids: %s", len(list), len(ids), r.Raw)
	}
	want := []string{runs[2], "", wf, runs[0], "", runs[1], runs[2], f.envID}
	for i, w := range want {
		got := str(list[i], "id")
		if w == "" && list[i] != nil || w != "" && got != w {
			t.Errorf("nodes[%d] = %v, want %q", i, list[i], w)
		}
	}
	if str(list[0], "__typename") != "Run" || str(list[2], "__typename") != "Workflow" || str(list[7], "__typename") != "Environment" {
		t.Errorf("types: %s", r.Raw)
	}
}
