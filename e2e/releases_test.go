package e2e

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The release tests run a release over GraphQL against a loopback API and
// watch the analysis (every 300ms through SLUICE_RELEASE_ANALYSIS_INTERVAL,
// on a stack of their own) roll it back or promote it.

const (
	releaseFields = `id state stepIndex weightPercent workflowID environmentID stableVersionID candidateVersionID reason
		steps { weightPercent holdFor minRuns } analysis { minRunsPerSide maxSuccessRateDrop }
		lastAnalysis { verdict step weightPercent stable { runs succeeded successRate successRateLower } candidate { runs succeeded successRate successRateUpper } reasons }
		analyses { verdict step weightPercent }`
	mCreateRelease = `mutation($in: CreateReleaseInput!) { createRelease(input: $in) { ` + releaseFields + ` } }`
	qRelease       = `query($id: ID!) { node(id: $id) { ... on Release { ` + releaseFields + ` } } }`
	qReleases      = `{ releases(first: 50) { totalCount edges { node { id state } } } }`
	qRunRelease    = `query($id: ID!) { node(id: $id) { ... on Run { id status releaseSide version { id number } release { id state } } } }`
	mPauseRelease  = `mutation($id: ID!) { pauseRelease(id: $id) { id state } }`
	mResumeRelease = `mutation($id: ID!) { resumeRelease(id: $id) { id state } }`
	mAbortRelease  = `mutation($id: ID!) { abortRelease(id: $id, reason: "changed our mind") { id state reason weightPercent } }`
	mRollbackDep   = `mutation($e: ID!, $w: ID!) { rollbackDeployment(environmentID: $e, workflowID: $w) { id active version { id } } }`
)

// flakyAPI answers /ok with 200 always and /flaky with 503 on two calls of
// every five (40%) while failing is on.
type flakyAPI struct {
	*httptest.Server
	calls   atomic.Int64
	failing atomic.Bool
}

func newFlakyAPI(t *testing.T) *flakyAPI {
	a := &flakyAPI{}
	a.failing.Store(true)
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/flaky" && a.failing.Load() {
			if n := a.calls.Add(1); n%5 == 1 || n%5 == 3 {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `{"error":"unavailable"}`)
				return
			}
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	t.Cleanup(a.Close)
	return a
}

func callDef(url string) map[string]any {
	return map[string]any{"schemaVersion": 1, "steps": []any{map[string]any{"id": "call", "type": "http",
		"request": map[string]any{"method": "GET", "url": url}, "retry": map[string]any{"maxAttempts": 1}}}}
}

// newVersion creates and publishes a version of wf.
func newVersion(t *testing.T, c *client, wf string, def map[string]any) string {
	t.Helper()
	v := str(c.ok(mCreateVer, map[string]any{"w": wf, "d": def}), "createWorkflowVersion.id")
	c.ok(mPublish, map[string]any{"id": v})
	return v
}

func releaseOf(t *testing.T, c *client, id string) map[string]any {
	t.Helper()
	r, _ := get(c.ok(qRelease, map[string]any{"id": id}), "node").(map[string]any)
	return r
}

// startRuns starts n runs of wf and waits for them to finish; it returns
// their ids.
func startRuns(t *testing.T, c *client, wf, env string, n int) []string {
	t.Helper()
	out := make([]string, 0, n)
	for range n {
		out = append(out, str(c.ok(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{}}), "startRun.id"))
	}
	for _, id := range out {
		waitRun(t, c, id, 20*time.Second, "succeeded", "failed")
	}
	return out
}

// TestReleaseRollsBackFailingCandidate: steps 10/50/100 with a candidate
// failing 40% of runs transiently: the analysis rolls it back at the 10%
// step, later runs all go to stable, and a candidate run resumed after the
// rollback stays on the candidate version.
func TestReleaseRollsBackFailingCandidate(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_RELEASE_ANALYSIS_INTERVAL=300ms")
	f := newFixture(t, "rel-back")
	owner := f.owner.on(st.server)
	api := newFlakyAPI(t)
	hooks := newScriptServer(t)
	hookEndpoint(t, owner, hooks.URL+"/rel", "release.started", "release.rolled_back", "release.progressed")
	wf, stable := deployWorkflow(t, f, "rel-back", callDef(api.URL+"/ok"))
	candidate := newVersion(t, owner, wf, callDef(api.URL+"/flaky"))
	rel := owner.ok(mCreateRelease, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": f.envID, "candidateVersionID": candidate,
		"steps":    []any{map[string]any{"weightPercent": 10, "holdFor": "1s"}, map[string]any{"weightPercent": 50, "holdFor": "1s"}, map[string]any{"weightPercent": 100}},
		"analysis": map[string]any{"minRunsPerSide": 10}}})
	relID := str(rel, "createRelease.id")
	if str(rel, "createRelease.state") != "PROGRESSING" || get(rel, "createRelease.weightPercent") != 10.0 || str(rel, "createRelease.stableVersionID") != stable {
		t.Fatalf("createRelease: %v", rel)
	}
	var mu sync.Mutex
	var candidateFailed string
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		ids := startRuns(t, owner, wf, f.envID, 40)
		for _, id := range ids {
			r := get(owner.ok(qRunRelease, map[string]any{"id": id}), "node")
			side := str(r, "releaseSide")
			if str(r, "release.id") == "" && side == "" && str(r, "version.id") == stable {
				continue // started after the rollback
			}
			if str(r, "release.id") != relID || (side != "STABLE" && side != "CANDIDATE") {
				t.Fatalf("run during the release: %v", r)
			}
			if (side == "STABLE") != (str(r, "version.id") == stable) {
				t.Fatalf("side and version disagree: %v", r)
			}
			if side == "CANDIDATE" && str(r, "status") == "failed" {
				mu.Lock()
				candidateFailed = id
				mu.Unlock()
			}
		}
		if s := str(releaseOf(t, owner, relID), "state"); s != "PROGRESSING" {
			break
		}
	}
	var r map[string]any
	eventually(t, 10*time.Second, func() (bool, string) {
		r = releaseOf(t, owner, relID)
		return str(r, "state") == "ROLLED_BACK", fmt.Sprintf("release %v", r)
	})
	for _, a := range get(r, "analyses").([]any) {
		if w := get(a, "weightPercent"); w != 10.0 {
			t.Errorf("an analysis at weight %v: the release reached past 10%%: %v", w, r)
		}
	}
	if str(r, "lastAnalysis.verdict") != "BREACH" || get(r, "weightPercent") != 0.0 || str(r, "reason") == "" {
		t.Errorf("rolled back release: %v", r)
	}
	hookWaitMsgs(t, hooks, "/rel", 1, func(m hookMsg) bool { return m.Type == "release.rolled_back" && str(m.Data, "releaseID") == relID })
	// The automatic rollback opened an incident under the tenant default
	// policy's releaseRollback objective, scoped to the workflow and
	// environment, in the rollback's transaction.
	incs := incidentsOf(t, owner, map[string]any{"workflowID": wf})
	if len(incs) != 1 || str(incs[0], "objective") != "releaseRollback" || str(incs[0], "severity") != "ERROR" || str(incs[0], "status") != "TRIGGERED" ||
		str(incs[0], "details.releaseID") != relID || str(incs[0], "details.candidateVersionID") != candidate || get(incs[0], "perRun") != true ||
		str(incs[0], "scope") != "WORKFLOW_ENVIRONMENT" || str(incs[0], "workflowID") != wf || str(incs[0], "policy.id") == "" {
		t.Fatalf("incidents of the rolled back release: %v", incs)
	}
	// Later runs all go to stable, and record no release.
	for _, id := range startRuns(t, owner, wf, f.envID, 20) {
		r := get(owner.ok(qRunRelease, map[string]any{"id": id}), "node")
		if str(r, "version.id") != stable || get(r, "releaseSide") != nil {
			t.Fatalf("run after the rollback: %v", r)
		}
	}
	// A failed candidate run resumed after the rollback stays on the candidate.
	if candidateFailed == "" {
		t.Fatal("no candidate run failed")
	}
	n := get(owner.ok(`query($w: ID!) { runs(where: {workflowID: $w, releaseSide: CANDIDATE, status: failed}) { totalCount } }`, map[string]any{"w": wf}), "runs.totalCount")
	if f, _ := n.(float64); f < 1 {
		t.Errorf("runs(where: {releaseSide: CANDIDATE, status: failed}): %v", n)
	}
	api.failing.Store(false)
	owner.ok(mEngResume, map[string]any{"id": candidateFailed})
	waitRun(t, owner, candidateFailed, 20*time.Second, "succeeded")
	rr := get(owner.ok(qRunRelease, map[string]any{"id": candidateFailed}), "node")
	if str(rr, "version.id") != candidate || str(rr, "releaseSide") != "CANDIDATE" {
		t.Errorf("resumed candidate run: %v", rr)
	}
}

// TestReleasePromotesHealthyCandidate: a healthy candidate goes through
// 10/50/100 and becomes the deployment; the same idempotency key lands on
// the same side.
func TestReleasePromotesHealthyCandidate(t *testing.T) {
	t.Parallel()
	st := newStack(t, 1, "SLUICE_RELEASE_ANALYSIS_INTERVAL=300ms")
	f := newFixture(t, "rel-promote")
	owner := f.owner.on(st.server)
	api := newFlakyAPI(t)
	api.failing.Store(false)
	wf, _ := deployWorkflow(t, f, "rel-ok", callDef(api.URL+"/ok"))
	candidate := newVersion(t, owner, wf, callDef(api.URL+"/flaky"))
	relID := str(owner.ok(mCreateRelease, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": f.envID, "candidateVersionID": candidate,
		"steps":    []any{map[string]any{"weightPercent": 10, "holdFor": "500ms"}, map[string]any{"weightPercent": 50, "holdFor": "500ms", "minRuns": 3}, map[string]any{"weightPercent": 100}},
		"analysis": map[string]any{"minRunsPerSide": 3}}}), "createRelease.id")
	// The same idempotency key: the same run, the same side.
	k := "same-key-" + randHex(4)
	a := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}, "k": k}), "startRun.id")
	b := str(owner.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{}, "k": k}), "startRun.id")
	ra, rb := get(owner.ok(qRunRelease, map[string]any{"id": a}), "node"), get(owner.ok(qRunRelease, map[string]any{"id": b}), "node")
	if a != b || str(ra, "releaseSide") == "" || str(ra, "releaseSide") != str(rb, "releaseSide") {
		t.Fatalf("same key: %v %v", ra, rb)
	}
	deadline := time.Now().Add(25 * time.Second)
	for time.Now().Before(deadline) {
		startRuns(t, owner, wf, f.envID, 20)
		if s := str(releaseOf(t, owner, relID), "state"); s != "PROGRESSING" {
			break
		}
	}
	r := releaseOf(t, owner, relID)
	if str(r, "state") != "PROMOTED" || get(r, "weightPercent") != 100.0 {
		t.Fatalf("release did not promote: %v", r)
	}
	seen := map[float64]bool{}
	for _, a := range get(r, "analyses").([]any) {
		seen[get(a, "weightPercent").(float64)] = true
	}
	if !seen[10] || !seen[50] || !seen[100] {
		t.Errorf("analyses at weights %v, want 10, 50 and 100", seen)
	}
	for _, id := range startRuns(t, owner, wf, f.envID, 5) {
		r := get(owner.ok(qRunRelease, map[string]any{"id": id}), "node")
		if str(r, "version.id") != candidate || get(r, "releaseSide") != nil {
			t.Fatalf("run after promotion: %v", r)
		}
	}
}

// TestReleaseBadInputIsolationAndRollbackDeployment: bad steps and a
// candidate of another workflow are VALIDATION at their path with nothing
// written; another tenant sees and changes nothing; pause, resume, abort;
// rollbackDeployment makes the previous version current.
func TestReleaseBadInputIsolationAndRollbackDeployment(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "rel-bad")
	other := newFixture(t, "rel-other")
	c := f.owner
	wf, stable := deployWorkflow(t, f, "rel-bad", callDef("http://127.0.0.1:9/ok"))
	cand := newVersion(t, c, wf, callDef("http://127.0.0.1:9/new"))
	in := func(steps []any, candidate string) map[string]any {
		return map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": f.envID, "candidateVersionID": candidate, "steps": steps}}
	}
	step := func(w int) map[string]any { return map[string]any{"weightPercent": w} }
	for _, tt := range []struct {
		name, code, path string
		vars             map[string]any
	}{
		{"weights not increasing", "VALIDATION", "input.steps[1].weightPercent", in([]any{step(50), step(10)}, cand)},
		{"weights equal", "VALIDATION", "input.steps[1].weightPercent", in([]any{step(10), step(10)}, cand)},
		{"weight over 100", "VALIDATION", "input.steps[1].weightPercent", in([]any{step(10), step(120)}, cand)},
		{"weight zero", "VALIDATION", "input.steps[0].weightPercent", in([]any{step(0)}, cand)},
		{"no steps", "VALIDATION", "input.steps", in([]any{}, cand)},
		{"bad holdFor", "VALIDATION", "input.steps[0].holdFor", in([]any{map[string]any{"weightPercent": 10, "holdFor": "soon"}}, cand)},
		{"candidate of another workflow", "VALIDATION", "input.candidateVersionID", in([]any{step(10)}, f.versionID)},
		{"candidate is the deployed version", "VALIDATION", "input.candidateVersionID", in([]any{step(10)}, stable)},
		{"candidate is a draft", "VALIDATION", "input.candidateVersionID", in([]any{step(10)}, str(c.ok(mCreateVer, map[string]any{"w": wf, "d": callDef("http://127.0.0.1:9/x")}), "createWorkflowVersion.id"))},
		{"candidate of another tenant", "NOT_FOUND", "input.candidateVersionID", in([]any{step(10)}, other.versionID)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := c.fail(tt.code, mCreateRelease, tt.vars)
			if !hasProblemAt(r, tt.path) {
				t.Errorf("want path %s, got %s", tt.path, r.Raw)
			}
		})
	}
	if n := get(c.ok(qReleases, nil), "releases.totalCount"); n != 0.0 {
		t.Fatalf("bad input wrote releases: %v", n)
	}
	// Another tenant cannot start a release on this tenant's workflow.
	other.owner.fail("NOT_FOUND", mCreateRelease, map[string]any{"in": map[string]any{"workflowID": wf, "environmentID": other.envID, "candidateVersionID": cand, "steps": []any{step(10)}}})

	relID := str(c.ok(mCreateRelease, in([]any{step(10), step(100)}, cand)), "createRelease.id")
	c.fail("CONFLICT", mCreateRelease, in([]any{step(20)}, cand))
	c.fail("CONFLICT", mDeploy, map[string]any{"v": cand, "e": f.envID})
	// Isolation: the other tenant neither sees nor changes it.
	if n := get(other.owner.ok(qReleases, nil), "releases.totalCount"); n != 0.0 {
		t.Errorf("other tenant sees %v releases", n)
	}
	if r := get(other.owner.ok(qRelease, map[string]any{"id": relID}), "node"); r != nil {
		t.Errorf("other tenant reads the release: %v", r)
	}
	for _, m := range []string{mPauseRelease, mResumeRelease, mAbortRelease} {
		other.owner.fail("NOT_FOUND", m, map[string]any{"id": relID})
	}
	if s := str(releaseOf(t, c, relID), "state"); s != "PROGRESSING" {
		t.Fatalf("release after the other tenant's attempts: %s", s)
	}
	// A viewer cannot change it.
	newClient(t, 0, token(t, f.tenantID, "viewer")).fail("FORBIDDEN", mPauseRelease, map[string]any{"id": relID})

	if s := str(c.ok(mPauseRelease, map[string]any{"id": relID}), "pauseRelease.state"); s != "PAUSED" {
		t.Fatalf("pause: %s", s)
	}
	c.fail("CONFLICT", mPauseRelease, map[string]any{"id": relID})
	if s := str(c.ok(mResumeRelease, map[string]any{"id": relID}), "resumeRelease.state"); s != "PROGRESSING" {
		t.Fatalf("resume: %s", s)
	}
	ab := c.ok(mAbortRelease, map[string]any{"id": relID})
	if str(ab, "abortRelease.state") != "ABORTED" || str(ab, "abortRelease.reason") != "changed our mind" {
		t.Fatalf("abort: %v", ab)
	}
	logs := edges(c.ok(`{ auditLogs(first: 50) { edges { node { action targetID } } } }`, nil), "auditLogs")
	actions := map[string]bool{}
	for _, l := range logs {
		if l["targetID"] == relID {
			actions[l["action"].(string)] = true
		}
	}
	for _, a := range []string{"release.create", "release.pause", "release.resume", "release.abort"} {
		if !actions[a] {
			t.Errorf("no %s audit entry: %v", a, actions)
		}
	}

	// rollbackDeployment: the previous version is current again.
	hooks := newScriptServer(t)
	hookEndpoint(t, c, hooks.URL+"/dep", "deployment.rolled_back")
	c.fail("VALIDATION", mRollbackDep, map[string]any{"e": f.prodEnvID, "w": wf})
	c.ok(mDeploy, map[string]any{"v": cand, "e": f.envID})
	dep := c.ok(mRollbackDep, map[string]any{"e": f.envID, "w": wf})
	if str(dep, "rollbackDeployment.version.id") != stable || get(dep, "rollbackDeployment.active") != true {
		t.Fatalf("rollbackDeployment: %v", dep)
	}
	other.owner.fail("NOT_FOUND", mRollbackDep, map[string]any{"e": f.envID, "w": wf})
	msg := hookWaitMsgs(t, hooks, "/dep", 1, func(m hookMsg) bool { return m.Type == "deployment.rolled_back" })[0]
	if str(msg.Data, "versionID") != stable || str(msg.Data, "rolledBackVersionID") != cand || str(msg.Data, "workflowID") != wf {
		t.Errorf("deployment.rolled_back data %v", msg.Data)
	}
}
