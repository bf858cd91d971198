package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestWebhookPortRefusalSaysPort: an endpoint refused only for its port
// says so, instead of claiming the host resolves to a forbidden address.
func TestWebhookPortRefusalSaysPort(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "hook-port")
	r := f.owner.fail("VALIDATION", mHookCreate, map[string]any{"u": "http://93.184.215.14:8443/x"})
	if !hasProblemAt(r, "input.url") {
		t.Fatalf("want a problem at input.url, got %s", r.Raw)
	}
	msg := r.Errors[0].Message
	if !strings.Contains(msg, "port 8443") {
		t.Errorf("message should name port 8443: %q", msg)
	}
	if strings.Contains(msg, "resolves to an address") {
		t.Errorf("message blames the address for a port refusal: %q", msg)
	}
	// An address refusal still says it is the address.
	r = f.owner.fail("VALIDATION", mHookCreate, map[string]any{"u": "http://10.0.0.1/x"})
	if msg := r.Errors[0].Message; !strings.Contains(msg, "resolves to an address webhooks may not reach") {
		t.Errorf("address refusal: %q", msg)
	}
	if n := get(f.owner.ok(qHookEndpoints, nil), "webhookEndpoints.totalCount"); n != float64(0) {
		t.Fatalf("%v endpoints written", n)
	}
}

// TestConcurrentDeploysSayAnotherWon fires concurrent deploys of different
// versions at one environment: those that lose the race are told another
// deployment committed first (CONFLICT), not that a deployment "already
// exists"; exactly one deployment is active afterwards, and it is one of
// the winners'.
func TestConcurrentDeploysSayAnotherWon(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "deploy-race")
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "Race", "s": "race"}), "createWorkflow.id")
	const n = 6
	var versions []string
	for i := range n {
		def := simpleDefinition()
		def["output"] = fmt.Sprintf("steps.shout.output + '%d'", i)
		v := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
		f.owner.ok(mPublish, map[string]any{"id": v})
		versions = append(versions, v)
	}
	conflicts := 0
	for round := 0; round < 10 && conflicts == 0; round++ {
		var mu sync.Mutex
		var wins []string
		var losers []*result
		var failed []error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, v := range versions {
			c := f.owner.on(server(i))
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				r, err := c.try(mDeploy, map[string]any{"v": v, "e": f.envID})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed = append(failed, err)
				} else if len(r.Errors) == 0 {
					wins = append(wins, v)
				} else {
					losers = append(losers, r)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(failed) > 0 {
			t.Fatal(failed[0])
		}
		if len(wins) == 0 {
			t.Fatalf("round %d: no deploy won: %v", round, losers[0].Raw)
		}
		for _, r := range losers {
			conflicts++
			if r.Code() != "CONFLICT" {
				t.Errorf("loser: want CONFLICT, got %s", r.Raw)
				continue
			}
			if msg := r.Errors[0].Message; !strings.Contains(msg, "another deployment to development committed first") || strings.Contains(msg, "already exists") {
				t.Errorf("loser message: %q", msg)
			}
		}
		d := f.owner.ok(qDefHistory, map[string]any{"id": wf})
		active := 0
		for _, e := range edges(d, "node.deployments") {
			if e["active"] == true {
				active++
				if !slices.Contains(wins, str(e, "version.id")) {
					t.Errorf("active deployment of version %s, which did not win", str(e, "version.id"))
				}
			}
		}
		if active != 1 {
			t.Errorf("round %d: %d active deployments, want 1", round, active)
		}
	}
	if conflicts == 0 {
		t.Skip("no deploy overlapped another in 10 rounds; nothing to check")
	}
}
