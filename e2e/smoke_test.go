package e2e

import "testing"

func TestFirstSession(t *testing.T) {
	f := newFixture(t, "smoke")
	d := f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Workflow { id slug versions { totalCount } deployments { edges { node { active version { number } environment { name } } } } } } }`, map[string]any{"id": f.workflowID})
	if str(d, "node.slug") != "greeter" {
		t.Fatalf("node: %v", d)
	}
	if n := get(d, "node.versions.totalCount"); n != float64(2) {
		t.Fatalf("versions: %v", n)
	}
	deps := edges(d, "node.deployments")
	if len(deps) != 1 || get(deps[0], "environment.name") != "development" || get(deps[0], "version.number") != float64(1) {
		t.Fatalf("deployments: %v", deps)
	}
}
