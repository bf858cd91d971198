package e2e

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

const (
	mStartRun = `mutation($w: ID!, $e: ID!, $i: Map, $k: String) { startRun(input: {workflowID: $w, environmentID: $e, input: $i, idempotencyKey: $k}) { id status } }`
	qRun      = `query($id: ID!) { node(id: $id) { ... on Run { id status output costMicroUSD version { number } error { class message stepID }
		steps { stepID status attempts output error { class message } attemptList { number status error { class message } } }
		events { seq type stepID attempt data } } } }`
)

// deployWorkflow creates, publishes and deploys a workflow with def in the
// fixture's development environment and returns the workflow and version ids.
func deployWorkflow(t *testing.T, f *fixture, slug string, def map[string]any) (string, string) {
	t.Helper()
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": slug, "s": slug}), "createWorkflow.id")
	v := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v})
	f.owner.ok(mDeploy, map[string]any{"v": v, "e": f.envID})
	return wf, v
}

// waitRun polls a run until its status is one of want and returns it.
func waitRun(t *testing.T, c *client, runID string, timeout time.Duration, want ...string) map[string]any {
	t.Helper()
	var last map[string]any
	eventually(t, timeout, func() (bool, string) {
		last, _ = get(c.ok(qRun, map[string]any{"id": runID}), "node").(map[string]any)
		return slices.Contains(want, str(last, "status")), fmt.Sprintf("run %s not %v: %v", runID, want, last)
	})
	return last
}

// stepOf returns the step with id from a run.
func stepOf(run map[string]any, id string) map[string]any {
	list, _ := run["steps"].([]any)
	for _, s := range list {
		if m, ok := s.(map[string]any); ok && m["stepID"] == id {
			return m
		}
	}
	return nil
}

// eventTypes lists a run's event types in order.
func eventTypes(run map[string]any) []string {
	var out []string
	list, _ := run["events"].([]any)
	for _, e := range list {
		out = append(out, str(e, "type"))
	}
	return out
}
