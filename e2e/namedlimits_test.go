package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	mSetLimit    = `mutation($n: String!, $l: Int!) { setConcurrencyLimit(input: {name: $n, limit: $l}) { id name limit running held } }`
	mDeleteLimit = `mutation($n: String!) { deleteConcurrencyLimit(name: $n) }`
	qLimits      = `{ concurrencyLimits { name limit running held } }`
	qHeldStats   = `{ queueStats { total { stepsHeld held { reason steps oldestSince } } } }`
)

// TestNamedLimitAcrossWorkflows: a tenant's limit crm-api 2 (from its
// manifest) is shared by two workflows: with two workers, the API never
// sees more than 2 of their calls at once; runs waiting say NAMED_LIMIT;
// concurrencyLimits and queueStats count the running and held steps; all
// runs succeed. Bad input is VALIDATION with its path and writes nothing;
// another tenant can neither read nor change the limit.
// Each call takes 1.5s, so the ten steps would overlap without the limit.
func TestNamedLimitAcrossWorkflows(t *testing.T) {
	t.Parallel()
	st := newStack(t, 2, "SLUICE_WORKER_CONCURRENCY=8")
	srv := newQueueServer(t, 1500*time.Millisecond) // each call takes a while: steps overlap
	_, c := applyTenant(t, st, "limits", "limits:\n  crm-api: 2\n")
	env := devEnv(t, c)
	step := func(id string) map[string]any {
		s := engHTTP(id, "GET", srv.URL+"/"+id+"/{{ run.id }}")
		s["limit"] = "crm-api"
		return s
	}
	wfA := deployOn(t, c, env, "limits-a", engDef(nil, "", step("a")))
	wfB := deployOn(t, c, env, "limits-b", engDef(nil, "", step("b")))
	var ids []string
	for i := range 10 {
		wf := wfA
		if i%2 == 1 {
			wf = wfB
		}
		ids = append(ids, str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{}}), "startRun.id"))
	}
	// While they run: the limit holds some steps (NAMED_LIMIT on their
	// runs, counted by concurrencyLimits and queueStats), never more than 2
	// run at once.
	// Each figure is read at its own moment: what was seen sticks.
	var sawNamed, sawLimitHeld, sawStatsHeld bool
	eventually(t, engWait, func() (bool, string) {
		l := c.ok(qLimits, nil)
		if r, _ := at(l, "concurrencyLimits.0.running").(float64); r > 2 {
			t.Fatalf("%v steps running under limit 2: %v", r, l)
		}
		if h, _ := at(l, "concurrencyLimits.0.held").(float64); h > 0 {
			sawLimitHeld = true
		}
		qs := c.ok(qHeldStats, nil)
		if h, _ := get(qs, "queueStats.total.stepsHeld").(float64); h > 0 && at(qs, "queueStats.total.held.0.reason") == "NAMED_LIMIT" &&
			at(qs, "queueStats.total.held.0.steps") == h && at(qs, "queueStats.total.held.0.oldestSince") != nil {
			sawStatsHeld = true
		}
		for _, id := range ids[2:] {
			if r := heldRun(t, c, id); r["queueReason"] == "NAMED_LIMIT" && r["queuedSince"] != nil {
				sawNamed = true
				break
			}
		}
		return sawNamed && sawLimitHeld && sawStatsHeld,
			fmt.Sprintf("seen: NAMED_LIMIT %v, held in concurrencyLimits %v, in queueStats %v; calls %d", sawNamed, sawLimitHeld, sawStatsHeld, len(srv.order))
	})
	if l := c.ok(qLimits, nil); at(l, "concurrencyLimits.0.name") != "crm-api" || at(l, "concurrencyLimits.0.limit") != float64(2) {
		t.Fatalf("concurrencyLimits: %v", l)
	}

	// Isolation: another tenant sees no limit and cannot change or delete
	// this one (its own namespace: the name is free there).
	_, other := applyTenant(t, st, "limits-other", "")
	if l, _ := get(other.ok(qLimits, nil), "concurrencyLimits").([]any); len(l) != 0 {
		t.Fatalf("another tenant lists %v", l)
	}
	other.fail("NOT_FOUND", mDeleteLimit, map[string]any{"n": "crm-api"})
	other.ok(mSetLimit, map[string]any{"n": "crm-api", "l": 50})
	// Bad input: VALIDATION with the path, nothing written.
	for _, b := range []struct {
		path string
		vars map[string]any
	}{
		{"input.name", map[string]any{"n": "CRM API", "l": 3}},
		{"input.limit", map[string]any{"n": "crm-api", "l": 0}},
		{"input.limit", map[string]any{"n": "crm-api", "l": 10001}},
	} {
		r := c.fail("VALIDATION", mSetLimit, b.vars)
		if !strings.Contains(fmt.Sprint(r.Errors), b.path) {
			t.Errorf("%v: error %v does not name %s", b.vars, r.Errors, b.path)
		}
	}
	bad := engDef(nil, "", step("a"))
	bad["steps"].([]any)[0].(map[string]any)["limit"] = "no-such-limit"
	wfBad := str(c.ok(mCreateWF, map[string]any{"n": "limits-bad", "s": "limits-bad"}), "createWorkflow.id")
	if r := c.fail("VALIDATION", mCreateVer, map[string]any{"w": wfBad, "d": bad}); !strings.Contains(fmt.Sprint(r.Errors), "$.steps[0].limit") {
		t.Errorf("unknown limit: %v does not name $.steps[0].limit", r.Errors)
	}
	if l := c.ok(qLimits, nil); len(get(l, "concurrencyLimits").([]any)) != 1 || at(l, "concurrencyLimits.0.limit") != float64(2) {
		t.Fatalf("after refused and foreign changes: %v", l)
	}

	for _, id := range ids {
		if r := waitRun(t, c, id, engWait, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
			t.Fatalf("run %s: %v", id, r)
		}
	}
	if order, _, _, most := srv.snapshot(); most > 2 || len(order) != 10 {
		t.Fatalf("%d calls, at most %d in flight; want 10 and at most 2", len(order), most)
	}
	if qs := c.ok(qHeldStats, nil); get(qs, "queueStats.total.stepsHeld") != float64(0) {
		t.Fatalf("queueStats after: %v", qs)
	}
}

// at is get with list indexes in the path ("concurrencyLimits.0.held").
func at(data any, path string) any {
	cur := data
	for _, k := range strings.Split(path, ".") {
		switch v := cur.(type) {
		case map[string]any:
			cur = v[k]
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(v) {
				return nil
			}
			cur = v[i]
		default:
			return nil
		}
	}
	return cur
}
