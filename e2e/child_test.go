package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Workflow steps through GraphQL: a parent run starts a child run of
// another deployed workflow, waits for it and uses its output; the child
// shows its parent and the parent its children; cancelling the parent
// cancels the child; a failed child fails the step with its class; the
// child's cost rolls up; publish refuses self-references and chains deeper
// than 5; bad definitions are refused at create.

const (
	qChildRun = `query($id: ID!) { node(id: $id) { ... on Run { id status output costMicroUSD parentRunID parentStepID depth
		parentRun { id } children { id status parentRunID parentStepID depth costMicroUSD }
		error { class message stepID }
		steps { stepID status output costMicroUSD error { class message } }
		events { seq type stepID data } } } }`
	mReplaySandbox = `mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`
)

func childRunNode(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	run, _ := get(c.ok(qChildRun, map[string]any{"id": id}), "node").(map[string]any)
	return run
}

// childOf waits until the run has a child whose status is one of want,
// and returns the child as the parent's children list shows it.
func childOf(t *testing.T, c *client, parentID string, want ...string) map[string]any {
	t.Helper()
	var child map[string]any
	eventually(t, engWait, func() (bool, string) {
		run := childRunNode(t, c, parentID)
		list, _ := run["children"].([]any)
		if len(list) == 1 {
			child, _ = list[0].(map[string]any)
			for _, w := range want {
				if child["status"] == w {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("children of %s: %v", parentID, run["children"])
	})
	return child
}

func intSchema(names ...string) map[string]any {
	props := map[string]any{}
	for _, n := range names {
		props[n] = map[string]any{"type": "integer"}
	}
	return map[string]any{"type": "object", "required": toAny(names), "properties": props}
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// doublerDefinition: a child workflow that doubles input.n.
func doublerDefinition() map[string]any {
	return map[string]any{"schemaVersion": 1, "input": intSchema("n"),
		"steps":  []any{map[string]any{"id": "d", "type": "transform", "output": map[string]any{"doubled": "input.n * 2"}}},
		"output": "steps.d.output"}
}

// parentDefinition: prep -> enrich (a child run of wf) -> after.
func parentDefinition(wf string, input any) map[string]any {
	return map[string]any{"schemaVersion": 1, "input": intSchema("n"),
		"steps": []any{
			map[string]any{"id": "prep", "type": "transform", "output": map[string]any{"m": "input.n + 1"}},
			map[string]any{"id": "enrich", "type": "workflow", "needs": []any{"prep"}, "workflow": wf, "input": input},
			map[string]any{"id": "after", "type": "transform", "needs": []any{"enrich"}, "output": "steps.enrich.output"},
		},
		"output": "steps.after.output"}
}

// TestWorkflowStepChildOutput: the parent waits for its child and a later
// step uses the child's output (ints stay ints); the child shows its
// parent, the parent lists the child; a sandbox replay of the parent uses
// the recorded output and starts no child.
func TestWorkflowStepChildOutput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-out")
	childWF, _ := deployWorkflow(t, f, "doubler", doublerDefinition())
	def := parentDefinition(childWF, map[string]any{"n": "steps.prep.output.m"})
	def["steps"].([]any)[2].(map[string]any)["output"] = map[string]any{"result": "steps.enrich.output.doubled + 1"}
	parentWF, _ := deployWorkflow(t, f, "parent", def)
	id := engStart(t, f.owner, f, parentWF, map[string]any{"n": 20})
	engFinish(t, f.owner, id, "succeeded")
	run := childRunNode(t, f.owner, id)
	if get(run, "output.result") != float64(43) || run["depth"] != float64(1) || run["parentRunID"] != nil || run["parentRun"] != nil {
		t.Fatalf("parent: %v", run)
	}
	if got := get(stepOf(run, "enrich"), "output.doubled"); got != float64(42) {
		t.Errorf("enrich output: %v", stepOf(run, "enrich"))
	}
	children, _ := run["children"].([]any)
	if len(children) != 1 {
		t.Fatalf("children: %v", run["children"])
	}
	childID := str(children[0], "id")
	var waiting map[string]any
	for _, e := range run["events"].([]any) {
		if str(e, "type") == "step.waiting" && str(e, "stepID") == "enrich" {
			waiting, _ = get(e, "data").(map[string]any)
		}
	}
	if str(waiting, "childRunID") != childID || str(waiting, "workflowID") != childWF {
		t.Errorf("step.waiting data: %v", waiting)
	}
	child := childRunNode(t, f.owner, childID)
	if child["status"] != "succeeded" || child["parentRunID"] != id || child["parentStepID"] != "enrich" || child["depth"] != float64(2) ||
		str(child, "parentRun.id") != id || get(child, "output.doubled") != float64(42) {
		t.Errorf("child: %v", child)
	}
	// The child's own runs list is empty; it is listed among the workflow's runs.
	if l, _ := child["children"].([]any); len(l) != 0 {
		t.Errorf("child's children: %v", l)
	}
	if n := get(f.owner.ok(qEngRunCount, map[string]any{"w": childWF}), "runs.totalCount"); n != float64(1) {
		t.Errorf("child workflow runs: %v", n)
	}

	// A sandbox replay of the parent rehearses with the recorded output.
	replay := str(f.owner.ok(mReplaySandbox, map[string]any{"id": id}), "replayRun.id")
	engFinish(t, f.owner, replay, "succeeded")
	r := childRunNode(t, f.owner, replay)
	if get(r, "output.result") != float64(43) {
		t.Errorf("replay output: %v", r["output"])
	}
	if l, _ := r["children"].([]any); len(l) != 0 {
		t.Errorf("a sandbox replay started children: %v", l)
	}
	if n := get(f.owner.ok(qEngRunCount, map[string]any{"w": childWF}), "runs.totalCount"); n != float64(1) {
		t.Errorf("child workflow runs after the replay: %v", n)
	}
}

// waiterDefinition: a child that waits for an event (its class on timeout
// is timeout).
func waiterDefinition(timeout string) map[string]any {
	return map[string]any{"schemaVersion": 1, "input": intSchema("n"),
		"steps":  []any{map[string]any{"id": "hold", "type": "wait", "event": "never.sent", "timeout": timeout}},
		"output": "steps.hold.output"}
}

// TestWorkflowStepCancelCascades: cancelling the parent cancels its
// waiting child.
func TestWorkflowStepCancelCascades(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-cancel")
	childWF, _ := deployWorkflow(t, f, "waiter", waiterDefinition("1h"))
	parentWF, _ := deployWorkflow(t, f, "parent", parentDefinition(childWF, map[string]any{"n": "steps.prep.output.m"}))
	operator := newClient(t, 1, token(t, f.tenantID, "operator"))
	id := engStart(t, operator, f, parentWF, map[string]any{"n": 1})
	child := childOf(t, operator, id, "waiting")
	waitRun(t, operator, id, engWait, "waiting")
	operator.ok(mEngCancel, map[string]any{"id": id})
	engFinish(t, operator, id, "cancelled")
	c := childRunNode(t, operator, str(child, "id"))
	if c["status"] != "cancelled" || get(c, "error.class") != "cancelled" || !strings.Contains(str(c, "error.message"), id) {
		t.Errorf("child after the parent's cancel: %v %v", c["status"], c["error"])
	}
	if s := stepOf(c, "hold"); s["status"] != "cancelled" {
		t.Errorf("child's wait step: %v", s)
	}
	if s := stepOf(childRunNode(t, operator, id), "enrich"); s["status"] != "cancelled" {
		t.Errorf("parent's workflow step: %v", s)
	}
	// Cancelled in the parent's transaction: the run list says so at once.
	if l := childRunNode(t, operator, id)["children"].([]any); len(l) != 1 || str(l[0], "status") != "cancelled" {
		t.Errorf("children: %v", l)
	}
}

// TestWorkflowStepChildFailure: a child that fails fails the parent's step
// with the child's class; an input the child's schema refuses fails the
// step (permanent) without starting a child.
func TestWorkflowStepChildFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-fail")
	childWF, _ := deployWorkflow(t, f, "waiter", waiterDefinition("1s"))
	parentWF, _ := deployWorkflow(t, f, "parent", parentDefinition(childWF, map[string]any{"n": "steps.prep.output.m"}))
	id := engStart(t, f.owner, f, parentWF, map[string]any{"n": 1})
	engFinish(t, f.owner, id, "failed")
	run := childRunNode(t, f.owner, id)
	children, _ := run["children"].([]any)
	if len(children) != 1 || str(children[0], "status") != "failed" {
		t.Fatalf("children: %v", run["children"])
	}
	step := stepOf(run, "enrich")
	if step["status"] != "failed" || get(step, "error.class") != "timeout" || !strings.Contains(str(step, "error.message"), str(children[0], "id")) ||
		get(run, "error.class") != "timeout" || get(run, "error.stepID") != "enrich" {
		t.Errorf("parent: %v, step %v", run["error"], step)
	}
	if s := stepOf(run, "after"); s["status"] == "succeeded" {
		t.Errorf("a step after the failed child ran: %v", s)
	}

	// The child's schema wants an integer: a string is refused, no child.
	bad, _ := deployWorkflow(t, f, "bad-parent", parentDefinition(childWF, map[string]any{"n": "string(steps.prep.output.m)"}))
	id = engStart(t, f.owner, f, bad, map[string]any{"n": 1})
	engFinish(t, f.owner, id, "failed")
	run = childRunNode(t, f.owner, id)
	step = stepOf(run, "enrich")
	if get(step, "error.class") != "permanent" || !strings.Contains(str(step, "error.message"), "input schema") || len(run["children"].([]any)) != 0 {
		t.Errorf("bad input: %v, children %v", step, run["children"])
	}
}

// TestWorkflowStepCostRollsUp: a child's model call is priced in the child
// and its cost is added to the parent's step and run.
func TestWorkflowStepCostRollsUp(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-cost")
	ai := newScriptServer(t)
	ai.script(openAIPath, openAIAnswer(`{"label":"urgent","priority":2}`))
	f.owner.ok(mCreateCred, map[string]any{"e": f.envID, "n": "model", "t": "openai", "s": map[string]any{"apiKey": "sk-test-" + randHex(8), "baseURL": ai.URL + "/v1"}})
	childWF, _ := deployWorkflow(t, f, "classify", classifyDefinition(nil))
	parentWF, _ := deployWorkflow(t, f, "parent", map[string]any{"schemaVersion": 1,
		"steps":  []any{map[string]any{"id": "enrich", "type": "workflow", "workflow": childWF, "input": map[string]any{"subject": "'Printer on fire'"}}},
		"output": "steps.enrich.output"})
	id := engStart(t, f.owner, f, parentWF, nil)
	engFinish(t, f.owner, id, "succeeded")
	run := childRunNode(t, f.owner, id)
	children, _ := run["children"].([]any)
	if len(children) != 1 {
		t.Fatalf("children: %v", run["children"])
	}
	childCost, _ := get(children[0], "costMicroUSD").(float64)
	if childCost <= 0 || run["costMicroUSD"] != childCost || get(stepOf(run, "enrich"), "costMicroUSD") != childCost {
		t.Errorf("cost: child %v, parent run %v, step %v", childCost, run["costMicroUSD"], stepOf(run, "enrich"))
	}
	if get(run, "output.queue") != "urgent" {
		t.Errorf("output: %v", run["output"])
	}
}

// TestWorkflowStepDepthAtPublish: a chain of 5 workflows publishes, a 6th
// on top is refused at $.steps[0].workflow; so are a step that starts its
// own workflow, a workflow that leads back, and workflows that do not
// exist or have no published version.
func TestWorkflowStepDepthAtPublish(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-depth")
	leaf := map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "a", "type": "transform", "output": "1"}}}
	calls := func(wf string) map[string]any {
		return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "call", "type": "workflow", "workflow": wf}}}
	}
	prev, _ := deployWorkflow(t, f, "level-5", leaf)
	for i := 4; i >= 1; i-- {
		prev, _ = deployWorkflow(t, f, fmt.Sprintf("level-%d", i), calls(prev)) // depth 5 - i + 1
	}
	publishRefused := func(name string, wf string, def map[string]any, want string) {
		t.Helper()
		v := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
		r := f.owner.fail("VALIDATION", mPublish, map[string]any{"id": v})
		list, _ := r.Errors[0].Extensions["problems"].([]any)
		if len(list) == 0 || str(list[0], "path") != "$.steps[0].workflow" || !strings.Contains(str(list[0], "message"), want) {
			t.Errorf("%s: %s", name, r.Raw)
		}
		if st := get(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on WorkflowVersion { status } } }`, map[string]any{"id": v}), "node.status"); st != "DRAFT" && st != "draft" {
			t.Errorf("%s: version %v", name, st)
		}
	}
	top := str(f.owner.ok(mCreateWF, map[string]any{"n": "level-0", "s": "level-0"}), "createWorkflow.id")
	publishRefused("depth 6", top, calls(prev), "6 deep")
	publishRefused("itself", top, calls(top), "own workflow")
	missing := "wf_01aaaaaaaaaaaaaaaaaaaaaaaa"
	publishRefused("missing", top, calls(missing), "does not exist")
	unpublished := str(f.owner.ok(mCreateWF, map[string]any{"n": "draft-only", "s": "draft-only"}), "createWorkflow.id")
	publishRefused("unpublished", top, calls(unpublished), "no published version")
	// A (published, a leaf) is started by B; A's next version would start B,
	// whose latest published version starts A.
	a, _ := deployWorkflow(t, f, "loop-a", leaf)
	b, _ := deployWorkflow(t, f, "loop-b", calls(a))
	publishRefused("leads back", a, calls(b), "leads back")
}

// TestWorkflowStepBadInput: definitions with a bad workflow step are
// refused at create with the field's path, and nothing is written.
func TestWorkflowStepBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "child-bad")
	step := func(mut func(map[string]any)) map[string]any {
		d := parentDefinition("wf_01aaaaaaaaaaaaaaaaaaaaaaaa", map[string]any{"n": "steps.prep.output.m"})
		mut(d["steps"].([]any)[1].(map[string]any))
		return d
	}
	qVersions := `query($w: ID!) { node(id: $w) { ... on Workflow { versions { totalCount } } } }`
	before := get(f.owner.ok(qVersions, map[string]any{"w": f.workflowID}), "node.versions.totalCount")
	for _, tc := range []struct {
		name string
		mut  func(map[string]any)
		path string
	}{
		{"no workflow", func(s map[string]any) { delete(s, "workflow") }, "$.steps[1].workflow"},
		{"empty workflow", func(s map[string]any) { s["workflow"] = "" }, "$.steps[1].workflow"},
		{"bad input expression", func(s map[string]any) { s["input"] = map[string]any{"n": "steps.prep.output.m * 'x'"} }, "$.steps[1].input.n"},
		{"input not an object", func(s map[string]any) { s["input"] = []any{1} }, "$.steps[1].input"},
		{"input reads a step it does not need", func(s map[string]any) { s["needs"] = []any{}; s["input"] = map[string]any{"n": "steps.prep.output.m"} }, "$.steps[1].input.n"},
		{"field of another type", func(s map[string]any) { s["model"] = "gpt-4o" }, "$.steps[1].model"},
		{"workflow on a transform", func(s map[string]any) { s["type"] = "transform"; s["output"] = "1" }, "$.steps[1].workflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.owner.fail("VALIDATION", mCreateVer, map[string]any{"w": f.workflowID, "d": step(tc.mut)})
			var paths []string
			list, _ := r.Errors[0].Extensions["problems"].([]any)
			for _, p := range list {
				paths = append(paths, str(p, "path"))
			}
			if !strings.Contains(strings.Join(paths, " ")+" ", tc.path+" ") {
				t.Errorf("want a problem at %s, got %v: %s", tc.path, paths, r.Raw)
			}
		})
	}
	if after := get(f.owner.ok(qVersions, map[string]any{"w": f.workflowID}), "node.versions.totalCount"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("versions written: %v, before %v", after, before)
	}
}

// TestWorkflowStepWakeUpSurvivesWorkerKillAndRedisWipe: with the worker
// SIGKILLed, a child cancelled through the API sends its parent's wake-up
// to Redis, which is then wiped; a new worker's reconciler finds the
// waiting step in Postgres and the parent fails with class cancelled.
func TestWorkflowStepWakeUpSurvivesWorkerKillAndRedisWipe(t *testing.T) {
	t.Parallel()
	st := newIsolatedProcessStack(t, 1) // its worker is SIGKILLed
	f := st.fixture(t, "child-durable")
	childWF, _ := deployWorkflow(t, f, "waiter", waiterDefinition("1h"))
	parentWF, _ := deployWorkflow(t, f, "parent", parentDefinition(childWF, map[string]any{"n": "steps.prep.output.m"}))
	g := f.owner.on(st.server)
	id := engStart(t, g, f, parentWF, map[string]any{"n": 1})
	child := childOf(t, g, id, "waiting")
	waitRun(t, g, id, engWait, "waiting")
	w := st.workers[0]
	_ = w.cmd.Process.Kill()
	<-w.done
	g.ok(mEngCancel, map[string]any{"id": str(child, "id")})
	rdb := st.redis()
	defer rdb.Close()
	ctx := context.Background()
	if n, err := rdb.DBSize(ctx).Result(); err != nil || n == 0 {
		t.Fatalf("Redis held %d keys (%v): the wipe would prove nothing", n, err)
	}
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if r := childRunNode(t, g, id); r["status"] != "waiting" {
		t.Fatalf("the parent moved without a worker: %v", r["status"])
	}
	nw, err := st.startWorker()
	if err != nil {
		t.Fatal(err)
	}
	st.workers[0] = nw
	defer dumpLogs(t, "child worker", []*process{w, nw})
	run := waitRun(t, g, id, 60*time.Second, "failed", "succeeded")
	if run["status"] != "failed" || get(run, "error.class") != "cancelled" || get(run, "error.stepID") != "enrich" {
		t.Fatalf("parent: %v %v", run["status"], run["error"])
	}
	if !strings.Contains(nw.Logs(), `"msg":"reconciled"`) {
		t.Error("the new worker never re-sent due work: the wake-up came from elsewhere")
	}
}
