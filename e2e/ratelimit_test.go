package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	mCreateRateLimit = `mutation($in: CreateRateLimitInput!) { createRateLimit(input: $in) { id scope host acrossCredentials environmentID credentialName rate period burst maxConcurrent } }`
	mUpdateRateLimit = `mutation($in: UpdateRateLimitInput!) { updateRateLimit(input: $in) { id rate period burst maxConcurrent } }`
	mDeleteRateLimit = `mutation($id: ID!) { deleteRateLimit(id: $id) }`
	qRateLimits      = `{ rateLimits(first: 50) { totalCount edges { node { id scope host rate period burst maxConcurrent state { nextSlotAt inFlight cooldownUntil } } } } }`
	qCooldowns       = `{ rateLimitCooldowns { scope until statusCode } }`
)

// limitedAPI is a loopback API that allows `rate` requests per second (a
// token bucket holding `rate` tokens) and answers 429 with Retry-After: 1
// past it. It records every request's arrival and answer.
type limitedAPI struct {
	*httptest.Server
	rate float64
	hold time.Duration // how long each accepted request takes

	mu       sync.Mutex
	tokens   float64
	last     time.Time
	arrivals []apiHit
	inFlight int
	maxIn    int
}

type apiHit struct {
	at     time.Time
	status int
	path   string
}

func newLimitedAPI(t *testing.T, rate float64, hold time.Duration) *limitedAPI {
	a := &limitedAPI{rate: rate, hold: hold, tokens: rate, last: time.Now()}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		a.mu.Lock()
		a.tokens = min(a.rate, a.tokens+now.Sub(a.last).Seconds()*a.rate)
		a.last = now
		status := http.StatusOK
		if a.tokens >= 1 {
			a.tokens--
		} else {
			status = http.StatusTooManyRequests
		}
		a.arrivals = append(a.arrivals, apiHit{now, status, r.URL.Path})
		a.inFlight++
		a.maxIn = max(a.maxIn, a.inFlight)
		a.mu.Unlock()
		defer func() { a.mu.Lock(); a.inFlight--; a.mu.Unlock() }()
		if status != http.StatusOK {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(status)
			fmt.Fprint(w, `{"error":"slow down"}`)
			return
		}
		time.Sleep(a.hold)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *limitedAPI) hits() []apiHit {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiHit(nil), a.arrivals...)
}

func (a *limitedAPI) host() string {
	u, _ := url.Parse(a.URL)
	return u.Host
}

// limitedWorkflow calls the API once per run, with the default retry policy.
func limitedWorkflow(api string) map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{map[string]any{
			"id": "call", "type": "http",
			"request": map[string]any{"method": "GET", "url": api + "/items/{{ input.n }}"},
			"expect":  map[string]any{"status": []any{200}},
		}},
		"output": "steps.call.output.body",
	}
}

// startLimitedRuns starts n runs of wf in the fixture's development environment.
func startLimitedRuns(t *testing.T, f *fixture, wf string, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		ids[i] = str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"n": i}}), "startRun.id")
	}
	return ids
}

// checkRunsWaitedNotRetried: every run succeeded, its call step with one
// attempt (waits for slots are not retries); returns how many runs waited
// for a rate limit (step.waiting, reason rate_limit).
func checkRunsWaitedNotRetried(t *testing.T, f *fixture, ids []string, timeout time.Duration) int {
	t.Helper()
	waited := 0
	for _, id := range ids {
		r := waitRun(t, f.owner, id, timeout, "succeeded", "failed", "cancelled")
		if r["status"] != "succeeded" {
			t.Fatalf("run %s: %v", id, r)
		}
		s := stepOf(r, "call")
		if s["attempts"] != float64(1) {
			t.Fatalf("run %s: step attempts %v, want 1 (waits are not retries): %v", id, s["attempts"], s)
		}
		if list, _ := s["attemptList"].([]any); len(list) != 1 {
			t.Fatalf("run %s: attemptList %v, want one attempt", id, list)
		}
		for _, e := range r["events"].([]any) {
			if str(e, "type") == "step.retrying" {
				t.Fatalf("run %s retried: %v", id, e)
			}
			if str(e, "type") == "step.waiting" && str(e, "data.reason") == "rate_limit" {
				if _, err := time.Parse(time.RFC3339Nano, str(e, "data.until")); err != nil {
					t.Fatalf("step.waiting without until: %v", e)
				}
				waited++
				break
			}
		}
	}
	return waited
}

// TestRateLimitPolicyKeepsUnderTheAPILimit: with a 5/s limit on the API's
// host, runs started all at once wait for their slots (step.waiting,
// reason rate_limit, attempts stays 1) and the API never answers 429.
func TestRateLimitPolicyKeepsUnderTheAPILimit(t *testing.T) {
	t.Parallel()
	const runs = 100 // 20 s at 5/s
	f := newFixture(t, "rl-policy")
	api := newLimitedAPI(t, 5, 0)
	p := f.owner.ok(mCreateRateLimit, map[string]any{"in": map[string]any{
		"scope": "HOST", "host": api.host(), "acrossCredentials": true, "rate": 5, "period": "1s", "burst": 1}})
	if str(p, "createRateLimit.host") != api.host() || get(p, "createRateLimit.rate") != float64(5) {
		t.Fatalf("created: %v", p)
	}
	wf, _ := deployWorkflow(t, f, "rl-policy", limitedWorkflow(api.URL))
	start := time.Now()
	ids := startLimitedRuns(t, f, wf, runs)
	// The policy's state shows the queue of reserved slots while runs wait.
	eventually(t, 30*time.Second, func() (bool, string) {
		list := edges(f.owner.ok(qRateLimits, nil), "rateLimits")
		return len(list) == 1 && get(list[0], "state.nextSlotAt") != nil, fmt.Sprintf("state: %v", list)
	})
	waited := checkRunsWaitedNotRetried(t, f, ids, 90*time.Second)
	took := time.Since(start)
	hits := api.hits()
	for _, h := range hits {
		if h.status != http.StatusOK {
			t.Fatalf("the API answered %d at %s: a call went past the limit", h.status, h.at.Format(time.RFC3339Nano))
		}
	}
	if len(hits) != runs {
		t.Fatalf("the API saw %d calls for %d runs", len(hits), runs)
	}
	if waited == 0 {
		t.Fatal("no run waited for a slot")
	}
	// 5/s with no burst: the calls span at least (runs-1)/5 seconds.
	if span := hits[len(hits)-1].at.Sub(hits[0].at); span < time.Duration(runs-2)*200*time.Millisecond {
		t.Fatalf("%d calls in %s: faster than 5/s", runs, span)
	}
	t.Logf("%d runs in %s, %d waited for a slot", runs, took, waited)
}

// TestRateLimitCooldownPausesEveryWorker: without a policy, the API's 429
// with Retry-After: 1 cools the host down for every worker: no call
// arrives during the cooldown (after a margin for calls already on their
// way), the cooldown is recorded (rateLimitCooldowns), and no run fails
// or spends a retry for it.
func TestRateLimitCooldownPausesEveryWorker(t *testing.T) {
	t.Parallel()
	const runs = 25
	f := newFixture(t, "rl-cooldown")
	api := newLimitedAPI(t, 5, 0)
	wf, _ := deployWorkflow(t, f, "rl-cooldown", limitedWorkflow(api.URL))
	ids := startLimitedRuns(t, f, wf, runs)
	eventually(t, 30*time.Second, func() (bool, string) {
		list, _ := get(f.owner.ok(qCooldowns, nil), "rateLimitCooldowns").([]any)
		for _, c := range list {
			if str(c, "scope") == "h:"+api.host() && get(c, "statusCode") == float64(429) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("cooldowns: %v", list)
	})
	// Another tenant calling the same host is not cooled down by this one's 429.
	other := newFixture(t, "rl-cooldown-other")
	if list, _ := get(other.owner.ok(qCooldowns, nil), "rateLimitCooldowns").([]any); len(list) != 0 {
		t.Fatalf("another tenant sees cooldowns: %v", list)
	}
	owf, _ := deployWorkflow(t, other, "rl-cooldown-other", limitedWorkflow(api.URL))
	otherRun := str(other.owner.ok(mStartRun, map[string]any{"w": owf, "e": other.envID, "i": map[string]any{"n": 1000}}), "startRun.id")
	waited := checkRunsWaitedNotRetried(t, f, ids, 120*time.Second)
	if r := waitRun(t, other.owner, otherRun, 60*time.Second, "succeeded", "failed", "cancelled"); r["status"] != "succeeded" {
		t.Fatalf("the other tenant's run: %v", r)
	}
	hits := api.hits()
	// A 429 at t asks for a second: calls that passed their check before the
	// cooldown was set may still arrive just after t; none may arrive from
	// t+500ms to t+1s.
	const margin = 500 * time.Millisecond
	tooMany := 0
	for _, h := range hits {
		if h.status != http.StatusTooManyRequests || h.path == "/items/1000" {
			continue // the other tenant's calls have cooldowns of their own
		}
		tooMany++
		for _, o := range hits {
			if o.path == "/items/1000" {
				continue
			}
			if d := o.at.Sub(h.at); d >= margin && d < time.Second {
				t.Fatalf("a call arrived %s after a 429 asking for 1s", d)
			}
		}
	}
	if tooMany == 0 {
		t.Fatal("the API never answered 429: nothing was tested")
	}
	if waited == 0 {
		t.Fatal("no run waited for the cooldown")
	}
	t.Logf("%d runs, %d calls, %d answered 429, %d runs waited", runs, len(hits), tooMany, waited)
}

// TestRateLimitMaxConcurrent: a credential's maxConcurrent 1 lets one call
// at a time reach the API; the others wait without spending retries.
func TestRateLimitMaxConcurrent(t *testing.T) {
	t.Parallel()
	const runs = 8
	f := newFixture(t, "rl-conc")
	api := newLimitedAPI(t, 1000, 100*time.Millisecond)
	f.owner.ok(mCreateRateLimit, map[string]any{"in": map[string]any{
		"scope": "CREDENTIAL", "environmentID": f.envID, "credentialName": "crm", "maxConcurrent": 1}})
	def := limitedWorkflow(api.URL)
	def["steps"].([]any)[0].(map[string]any)["credential"] = "crm"
	wf, _ := deployWorkflow(t, f, "rl-conc", def)
	ids := startLimitedRuns(t, f, wf, runs)
	checkRunsWaitedNotRetried(t, f, ids, 90*time.Second)
	api.mu.Lock()
	maxIn := api.maxIn
	api.mu.Unlock()
	if maxIn != 1 {
		t.Fatalf("the API had %d calls in flight at once, want 1", maxIn)
	}
	if n := len(api.hits()); n != runs {
		t.Fatalf("the API saw %d calls for %d runs", n, runs)
	}
}

// TestRateLimitIsolationAndBadInput: another tenant's limits and cooldowns
// are unreachable; bad input is refused with VALIDATION and its path, and
// nothing is written (no policy, no audit entry); only admins write.
func TestRateLimitIsolationAndBadInput(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "rl-iso-a")
	b := newFixture(t, "rl-iso-b")
	pa := str(a.owner.ok(mCreateRateLimit, map[string]any{"in": map[string]any{
		"scope": "CREDENTIAL", "credentialID": a.credentialID, "rate": 10, "period": "1m", "burst": 2}}), "createRateLimit.id")
	// Tenant b sees none of a's.
	if n := get(b.owner.ok(qRateLimits, nil), "rateLimits.totalCount"); n != float64(0) {
		t.Fatalf("tenant b lists %v rate limits", n)
	}
	if got := get(a.owner.ok(`query($id: ID!) { node(id: $id) { ... on RateLimit { id rate burst period credentialName } } }`, map[string]any{"id": pa}), "node"); str(got, "id") != pa || get(got, "rate") != float64(10) || str(got, "credentialName") != "crm" {
		t.Fatalf("tenant a reads its rate limit: %v", got)
	}
	if n := get(b.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": pa}), "node"); n != nil {
		t.Fatalf("tenant b reads a's rate limit: %v", n)
	}
	b.owner.fail("NOT_FOUND", mUpdateRateLimit, map[string]any{"in": map[string]any{"id": pa, "rate": 1}})
	b.owner.fail("NOT_FOUND", mDeleteRateLimit, map[string]any{"id": pa})
	r := b.owner.fail("VALIDATION", mCreateRateLimit, map[string]any{"in": map[string]any{"scope": "CREDENTIAL", "credentialID": a.credentialID, "rate": 1}})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "input.credentialID" {
		t.Fatalf("another tenant's credential: path %q: %s", p, r.Raw)
	}
	if got := str(a.owner.ok(qRateLimits, nil), "rateLimits.edges.0.node.id"); got != "" && got != pa {
		t.Fatalf("a's list: %s", got)
	}

	// Bad input: VALIDATION at the field's path.
	bad := []struct {
		name string
		in   map[string]any
		path string
	}{
		{"negative rate", map[string]any{"scope": "HOST", "host": "api.example.com", "rate": -1}, "input.rate"},
		{"zero period", map[string]any{"scope": "HOST", "host": "api.example.com", "rate": 5, "period": "0s"}, "input.period"},
		{"period not a duration", map[string]any{"scope": "HOST", "host": "api.example.com", "rate": 5, "period": "soon"}, "input.period"},
		{"burst zero", map[string]any{"scope": "HOST", "host": "api.example.com", "rate": 5, "burst": 0}, "input.burst"},
		{"negative maxConcurrent", map[string]any{"scope": "HOST", "host": "api.example.com", "maxConcurrent": -2}, "input.maxConcurrent"},
		{"limits nothing", map[string]any{"scope": "HOST", "host": "api.example.com"}, "input.rate"},
		{"host with a scheme", map[string]any{"scope": "HOST", "host": "https://api.example.com/v1", "rate": 5}, "input.host"},
		{"host missing", map[string]any{"scope": "HOST", "rate": 5}, "input.host"},
		{"unknown credential", map[string]any{"scope": "CREDENTIAL", "credentialID": "cred_nope", "rate": 5}, "input.credentialID"},
		{"unknown credential name", map[string]any{"scope": "CREDENTIAL", "environmentID": b.envID, "credentialName": "nope", "rate": 5}, "input.credentialName"},
		{"credential scope with a host", map[string]any{"scope": "CREDENTIAL", "credentialID": b.credentialID, "host": "x.example.com", "rate": 5}, "input.host"},
	}
	auditBefore := len(edges(b.owner.ok(`{ auditLogs(first: 200) { edges { node { id action } } } }`, nil), "auditLogs"))
	for _, tc := range bad {
		r := b.owner.fail("VALIDATION", mCreateRateLimit, map[string]any{"in": tc.in})
		if p, _ := r.Errors[0].Extensions["path"].(string); p != tc.path {
			t.Errorf("%s: path %q, want %q: %s", tc.name, p, tc.path, r.Raw)
		}
	}
	// An update with bad input changes nothing.
	pb := str(b.owner.ok(mCreateRateLimit, map[string]any{"in": map[string]any{"scope": "HOST", "host": "API.example.com:8443", "rate": 3}}), "createRateLimit.id")
	r = b.owner.fail("VALIDATION", mUpdateRateLimit, map[string]any{"in": map[string]any{"id": pb, "rate": -5}})
	if p, _ := r.Errors[0].Extensions["path"].(string); p != "input.rate" {
		t.Fatalf("update: path %q", p)
	}
	list := edges(b.owner.ok(qRateLimits, nil), "rateLimits")
	if len(list) != 1 || list[0]["rate"] != float64(3) || list[0]["host"] != "api.example.com:8443" {
		t.Fatalf("after refused input, tenant b has: %v", list)
	}
	var actions []string
	for _, e := range edges(b.owner.ok(`{ auditLogs(first: 200) { edges { node { id action } } } }`, nil), "auditLogs") {
		if strings.HasPrefix(str(e, "action"), "rate_limit.") {
			actions = append(actions, str(e, "action"))
		}
	}
	if len(actions) != 1 || actions[0] != "rate_limit.create" {
		t.Fatalf("audit entries of rate limits: %v (before the bad input there were %d entries)", actions, auditBefore)
	}
	// A duplicate scope is a conflict; only admins write.
	b.owner.fail("CONFLICT", mCreateRateLimit, map[string]any{"in": map[string]any{"scope": "HOST", "host": "api.example.com:8443", "rate": 1}})
	viewerC := newClient(t, 0, token(t, b.tenantID, "viewer"))
	viewerC.fail("FORBIDDEN", mCreateRateLimit, map[string]any{"in": map[string]any{"scope": "HOST", "host": "other.example.com", "rate": 1}})
	up := b.owner.ok(mUpdateRateLimit, map[string]any{"in": map[string]any{"id": pb, "rate": 7, "period": "10s"}})
	if get(up, "updateRateLimit.rate") != float64(7) || str(up, "updateRateLimit.period") != "10s" {
		t.Fatalf("update: %v", up)
	}
	b.owner.ok(mDeleteRateLimit, map[string]any{"id": pb})
	if n := get(b.owner.ok(qRateLimits, nil), "rateLimits.totalCount"); n != float64(0) {
		t.Fatalf("after delete: %v", n)
	}
	// Tenant a's policy is untouched by all of it.
	if n := get(a.owner.ok(qRateLimits, nil), "rateLimits.totalCount"); n != float64(1) {
		t.Fatalf("tenant a has %v rate limits", n)
	}
}

// TestRateLimitCooldownSurvivesRedisWipe: a cooldown is durable: after
// Redis is wiped, the restorer writes it back from Postgres, and a run
// started then waits for it (cause cooldown) without calling the API.
func TestRateLimitCooldownSurvivesRedisWipe(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	seen := 0
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen++
		mu.Unlock()
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(api.Close)
	st := newStack(t, 1, "SLUICE_RATE_LIMIT_RESTORE_INTERVAL=200ms")
	f := newFixture(t, "rl-wipe")
	owner := f.owner.on(st.server)
	wf, _ := deployWorkflow(t, f, "rl-wipe", limitedWorkflow(api.URL))
	first := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"n": 1}}), "startRun.id")
	host := strings.TrimPrefix(api.URL, "http://")
	key := "sluice:rl:{" + f.tenantID + "}:cd:h:" + host
	rdb := st.redis()
	defer rdb.Close()
	ctx := t.Context()
	eventually(t, 30*time.Second, func() (bool, string) {
		n, _ := rdb.Exists(ctx, key).Result()
		return n == 1, "no cooldown in Redis yet"
	})
	if err := rdb.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		n, _ := rdb.Exists(ctx, key).Result()
		return n == 1, "the cooldown was not restored into Redis"
	})
	second := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"n": 2}}), "startRun.id")
	eventually(t, 30*time.Second, func() (bool, string) {
		r, _ := get(owner.ok(qRun, map[string]any{"id": second}), "node").(map[string]any)
		for _, e := range r["events"].([]any) {
			if str(e, "type") == "step.waiting" && str(e, "data.cause") == "cooldown" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("second run has not waited for the cooldown: %v", r)
	})
	mu.Lock()
	n := seen
	mu.Unlock()
	if n != 1 {
		t.Fatalf("the API saw %d calls, want 1 (the one it refused)", n)
	}
	for _, id := range []string{first, second} {
		r, _ := get(owner.ok(qRun, map[string]any{"id": id}), "node").(map[string]any)
		if s := stepOf(r, "call"); s["attempts"] != float64(1) || r["status"] == "failed" {
			t.Fatalf("run %s: %v", id, r)
		}
		owner.ok(`mutation($id: ID!) { cancelRun(id: $id) { id status } }`, map[string]any{"id": id})
	}
}
