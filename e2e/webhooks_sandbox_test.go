package e2e

import (
	"testing"
	"time"
)

// TestWebhookSandboxReplayNotifiesNoOne checks that a live run notifies the
// tenant's endpoint and its SANDBOX replay (a rehearsal on real data) does
// not, while the replay itself succeeds.
func TestWebhookSandboxReplayNotifiesNoOne(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-sandbox")
	recv := newScriptServer(t)
	hookEndpoint(t, f.owner, recv.URL+"/hooks", "run.succeeded")
	wf, _ := deployWorkflow(t, f, "rehearsed", simpleDefinition())
	src := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"name": "ada"}}), "startRun.id")
	waitRun(t, f.owner, src, 30*time.Second, "succeeded")
	hookWaitMsgs(t, recv, "/hooks", 1, forRun(src))

	replay := str(f.owner.ok(`mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`, map[string]any{"id": src}), "replayRun.id")
	waitRun(t, f.owner, replay, 30*time.Second, "succeeded")
	live := str(f.owner.ok(`mutation($id: ID!) { replayRun(input: {runID: $id, mode: LIVE}) { id } }`, map[string]any{"id": src}), "replayRun.id")
	waitRun(t, f.owner, live, 30*time.Second, "succeeded")
	// The live replay's notice arriving shows deliveries are flowing; the
	// sandbox replay, finished before it started, must have sent none.
	hookWaitMsgs(t, recv, "/hooks", 1, forRun(live))
	if got := hookMsgs(t, recv, "/hooks"); len(got) != 2 {
		t.Fatalf("receiver got %d messages, want 2 (source and live replay): %v", len(got), hookTypes(got))
	}
	for _, m := range hookMsgs(t, recv, "/hooks") {
		if m.runID() == replay {
			t.Fatalf("the sandbox replay %s sent %s", replay, m.Type)
		}
	}
}
