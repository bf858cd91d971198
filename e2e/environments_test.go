package e2e

import (
	"strings"
	"testing"
)

const (
	mSetVar      = `mutation($e: ID!, $n: String!, $t: EnvironmentVariableType!, $v: Any) { setEnvironmentVariable(input: {environmentID: $e, name: $n, type: $t, value: $v}) { id varsVersion variables { name type value } } }`
	mSetVars     = `mutation($e: ID!, $s: [EnvironmentVariableInput!], $u: [String!]) { setEnvironmentVariables(input: {environmentID: $e, set: $s, unset: $u}) { id varsVersion variables { name type value } } }`
	mUnsetVar    = `mutation($e: ID!, $n: String!) { unsetEnvironmentVariable(input: {environmentID: $e, name: $n}) { id varsVersion variables { name } } }`
	mPromote     = `mutation($f: ID!, $t: ID!, $w: ID!) { promoteDeployment(input: {fromEnvironmentID: $f, toEnvironmentID: $t, workflowID: $w}) { id active version { id } environment { id } } }`
	mArchiveEnv  = `mutation($id: ID!) { archiveEnvironment(id: $id) { id archived archivedAt } }`
	mUnarchive   = `mutation($id: ID!) { unarchiveEnvironment(id: $id) { id archived archivedAt } }`
	mUpdateEnv   = `mutation($id: ID!, $n: String, $d: String) { updateEnvironment(input: {id: $id, name: $n, description: $d}) { id name description } }`
	qEnvVars     = `query($id: ID!) { node(id: $id) { ... on Environment { id name archived varsVersion variables { name type value } deployments { totalCount } variableVersions { totalCount edges { node { version variables { name value } setNames unsetNames createdBy } } } } } }`
	qRunVarsVers = `query($id: ID!) { node(id: $id) { ... on Run { id envVarsVersion environment { id } } } }`
)

// envIDs maps the tenant's environment names to ids.
func envIDs(t *testing.T, c *client) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range edges(c.ok(qEnvironments, nil), "environments") {
		out[e["name"].(string)] = e["id"].(string)
	}
	return out
}

// varsDefinition calls the environment's apiBase twice: /ping, then /after.
func varsDefinition() map[string]any {
	call := engHTTP("call", "GET", "{{ env.vars.apiBase }}/ping")
	call["if"] = "env.vars.apiBase.startsWith('http')"
	d := engDef(nil, "",
		call,
		engHTTP("after", "GET", "{{ env.vars.apiBase }}/after?label={{ env.vars.label }}", "call"))
	d["vars"] = map[string]any{
		"apiBase": map[string]any{"type": "string", "required": true, "description": "where the API lives"},
		"label":   map[string]any{"type": "string", "default": "none"},
	}
	d["output"] = "{'base': env.vars.apiBase, 'label': env.vars.label}"
	return d
}

// TestEnvironmentVariablesIsolate: one published version deployed to staging
// and production, each with its own apiBase, calls each environment's URL;
// a run failed before a variable change resumes with the old value;
// deploying to an environment without a required variable is refused naming
// it (nothing written); promoting staging to production deploys the same
// version.
func TestEnvironmentVariablesIsolate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envvars")
	envs := envIDs(t, f.owner)
	staging, prod, dev := envs["staging"], envs["production"], envs["development"]
	srv := newScriptServer(t)

	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "vars", "s": "vars"}), "createWorkflow.id")
	v1 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": varsDefinition()}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v1})

	// Development has no apiBase: refused, naming it, nothing written.
	r := f.owner.fail("VALIDATION", mDeploy, map[string]any{"v": v1, "e": dev})
	if !hasProblemAt(r, "$.vars.apiBase") || !strings.Contains(r.Raw, "apiBase") {
		t.Fatalf("deploy without apiBase: %s", r.Raw)
	}
	// A value of another type is refused too.
	f.owner.ok(mSetVar, map[string]any{"e": dev, "n": "apiBase", "t": "INTEGER", "v": 5})
	r = f.owner.fail("VALIDATION", mDeploy, map[string]any{"v": v1, "e": dev})
	if !hasProblemAt(r, "$.vars.apiBase") || !strings.Contains(r.Raw, "declared string") {
		t.Fatalf("deploy with an integer apiBase: %s", r.Raw)
	}
	if n := get(f.owner.ok(qEnvVars, map[string]any{"id": dev}), "node.deployments.totalCount"); n != float64(1) { // the fixture's greeter only
		t.Fatalf("development deployments after refused deploys: %v", n)
	}

	set := f.owner.ok(mSetVars, map[string]any{"e": staging, "s": []any{
		map[string]any{"name": "apiBase", "type": "STRING", "value": srv.URL + "/staging"},
		map[string]any{"name": "label", "type": "STRING", "value": "blue"},
	}})
	if get(set, "setEnvironmentVariables.varsVersion") != float64(1) {
		t.Fatalf("staging variables: %v", set)
	}
	f.owner.ok(mSetVar, map[string]any{"e": prod, "n": "apiBase", "t": "STRING", "v": srv.URL + "/prod"})

	f.owner.ok(mDeploy, map[string]any{"v": v1, "e": staging})
	srv.script("/staging/after", reply{Status: 400, Body: map[string]any{"error": "not yet"}})
	failed := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": staging}), "startRun.id")
	run := engFinish(t, f.owner, failed, "failed")
	if run["failedStepID"] != "after" {
		t.Fatalf("run failed at %v: %v", run["failedStepID"], run["error"])
	}
	engCount(t, srv, "GET", "/staging/ping", 1)
	if got := get(f.owner.ok(qRunVarsVers, map[string]any{"id": failed}), "node.envVarsVersion"); got != float64(1) {
		t.Fatalf("run's variables version: %v", got)
	}

	// Promote staging to production: the same version.
	dep := f.owner.ok(mPromote, map[string]any{"f": staging, "t": prod, "w": wf})
	if str(dep, "promoteDeployment.version.id") != v1 || str(dep, "promoteDeployment.environment.id") != prod {
		t.Fatalf("promote: %v", dep)
	}
	prodRun := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": prod}), "startRun.id")
	run = engFinish(t, f.owner, prodRun, "succeeded")
	if get(run, "output.base") != srv.URL+"/prod" || get(run, "output.label") != "none" {
		t.Fatalf("production run output (apiBase, default label): %v", run["output"])
	}
	engCount(t, srv, "GET", "/prod/ping", 1)
	engCount(t, srv, "GET", "/prod/after", 1)

	// Staging moves; the failed run resumes with the value it started with.
	f.owner.ok(mSetVar, map[string]any{"e": staging, "n": "apiBase", "t": "STRING", "v": srv.URL + "/moved"})
	srv.script("/staging/after", reply{Status: 200, Body: map[string]any{"ok": true}})
	f.owner.ok(mEngResume, map[string]any{"id": failed})
	run = engFinish(t, f.owner, failed, "succeeded")
	if get(run, "output.base") != srv.URL+"/staging" || get(run, "output.label") != "blue" {
		t.Fatalf("resumed run output: %v", run["output"])
	}
	engCount(t, srv, "GET", "/staging/after", 2)
	engCount(t, srv, "GET", "/moved/after", 0)
	// A replay reads the source run's values too.
	replay := str(f.owner.ok(`mutation($id: ID!) { replayRun(input: {runID: $id, mode: LIVE}) { id } }`, map[string]any{"id": failed}), "replayRun.id")
	run = engFinish(t, f.owner, replay, "succeeded")
	if get(run, "output.base") != srv.URL+"/staging" {
		t.Fatalf("replay output: %v", run["output"])
	}
	engCount(t, srv, "GET", "/staging/ping", 2)
	// A new staging run reads the new value.
	newRun := str(f.owner.ok(mStartRun, map[string]any{"w": wf, "e": staging}), "startRun.id")
	engFinish(t, f.owner, newRun, "succeeded")
	engCount(t, srv, "GET", "/moved/ping", 1)
	engCount(t, srv, "GET", "/staging/ping", 2)

	// What a deployed version requires cannot be removed or retyped.
	r = f.owner.fail("VALIDATION", mUnsetVar, map[string]any{"e": staging, "n": "apiBase"})
	if !hasProblemAt(r, "input.name") || !strings.Contains(r.Raw, "deployed here") {
		t.Fatalf("unset of a required variable: %s", r.Raw)
	}
	r = f.owner.fail("VALIDATION", mSetVar, map[string]any{"e": staging, "n": "apiBase", "t": "BOOLEAN", "v": true})
	if !hasProblemAt(r, "input.type") {
		t.Fatalf("retype of a declared variable: %s", r.Raw)
	}
	f.owner.ok(mUnsetVar, map[string]any{"e": staging, "n": "label"}) // has a default
	// Every version of staging's variables is kept.
	env := f.owner.ok(qEnvVars, map[string]any{"id": staging})
	if get(env, "node.variableVersions.totalCount") != float64(3) || get(env, "node.varsVersion") != float64(3) {
		t.Fatalf("staging versions: %v", env)
	}
	logs := f.owner.ok(`{ auditLogs(where: {action: "environment.variables.set"}) { totalCount } }`, nil)
	if get(logs, "auditLogs.totalCount") != float64(5) {
		t.Fatalf("variables audit entries: %v", logs)
	}
	if get(f.owner.ok(`{ auditLogs(where: {action: "deployment.promote"}) { totalCount } }`, nil), "auditLogs.totalCount") != float64(1) {
		t.Fatal("promotion not audited")
	}
}

// TestEnvironmentVariablesBadInput: bad names, wrong types, values too
// large, unknown names to unset, non-admins: refused with the path, nothing
// written.
func TestEnvironmentVariablesBadInput(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envvars-bad")
	env := f.envID
	big := strings.Repeat("x", 17<<10)
	for _, tc := range []struct {
		name string
		set  []any
		uns  []any
		path string
	}{
		{"bad name", []any{map[string]any{"name": "1bad", "type": "STRING", "value": "x"}}, nil, "input.set[0].name"},
		{"dashed name", []any{map[string]any{"name": "ok", "type": "STRING", "value": "x"}, map[string]any{"name": "a-b", "type": "STRING", "value": "x"}}, nil, "input.set[1].name"},
		{"wrong type", []any{map[string]any{"name": "n", "type": "INTEGER", "value": "abc"}}, nil, "input.set[0].value"},
		{"fraction as integer", []any{map[string]any{"name": "n", "type": "INTEGER", "value": 1.5}}, nil, "input.set[0].value"},
		{"boolean", []any{map[string]any{"name": "n", "type": "BOOLEAN", "value": "true"}}, nil, "input.set[0].value"},
		{"json too large", []any{map[string]any{"name": "j", "type": "JSON", "value": map[string]any{"k": big}}}, nil, "input.set[0].value"},
		{"twice", []any{map[string]any{"name": "a", "type": "STRING", "value": "x"}, map[string]any{"name": "a", "type": "STRING", "value": "y"}}, nil, "input.set[1].name"},
		{"unset unknown", nil, []any{"missing"}, "input.unset[0]"},
		{"nothing", nil, nil, "input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.owner.fail("VALIDATION", mSetVars, map[string]any{"e": env, "s": tc.set, "u": tc.uns})
			if !hasProblemAt(r, tc.path) {
				t.Fatalf("want a problem at %s: %s", tc.path, r.Raw)
			}
		})
	}
	r := f.owner.fail("VALIDATION", mSetVar, map[string]any{"e": env, "n": "ok", "t": "NUMBER", "v": "12"})
	if !hasProblemAt(r, "input.value") {
		t.Fatalf("setEnvironmentVariable path: %s", r.Raw)
	}
	editor := newClient(t, 1, token(t, f.tenantID, "editor"))
	editor.fail("FORBIDDEN", mSetVar, map[string]any{"e": env, "n": "ok", "t": "STRING", "v": "x"})
	editor.fail("FORBIDDEN", mArchiveEnv, map[string]any{"id": env})

	got := f.owner.ok(qEnvVars, map[string]any{"id": env})
	if get(got, "node.varsVersion") != float64(0) || len(get(got, "node.variables").([]any)) != 0 || get(got, "node.variableVersions.totalCount") != float64(0) {
		t.Fatalf("refused changes wrote something: %v", got)
	}
	if n := get(f.owner.ok(`{ auditLogs(where: {action: "environment.variables.set"}) { totalCount } }`, nil), "auditLogs.totalCount"); n != float64(0) {
		t.Fatalf("audit entries for refused changes: %v", n)
	}

	// Every type round-trips; unset removes.
	ok := f.owner.ok(mSetVars, map[string]any{"e": env, "s": []any{
		map[string]any{"name": "s", "type": "STRING", "value": "x"},
		map[string]any{"name": "n", "type": "NUMBER", "value": 1.5},
		map[string]any{"name": "i", "type": "INTEGER", "value": 9007199254740993},
		map[string]any{"name": "b", "type": "BOOLEAN", "value": true},
		map[string]any{"name": "j", "type": "JSON", "value": map[string]any{"a": []any{1, "two"}}},
	}})
	vars := get(ok, "setEnvironmentVariables.variables").([]any)
	if len(vars) != 5 || str(vars[0], "name") != "b" || str(vars[1], "type") != "INTEGER" {
		t.Fatalf("variables: %v", vars)
	}
	un := f.owner.ok(mUnsetVar, map[string]any{"e": env, "n": "s"})
	if get(un, "unsetEnvironmentVariable.varsVersion") != float64(2) || len(get(un, "unsetEnvironmentVariable.variables").([]any)) != 4 {
		t.Fatalf("unset: %v", un)
	}
}

// TestEnvironmentIsolation: another tenant can neither read nor set
// variables, archive, rename or promote.
func TestEnvironmentIsolation(t *testing.T) {
	t.Parallel()
	a := newFixture(t, "envs-a")
	b := newFixture(t, "envs-b")
	a.owner.ok(mSetVar, map[string]any{"e": a.envID, "n": "secretish", "t": "STRING", "v": "a-only"})
	if n := get(b.owner.ok(qEnvVars, map[string]any{"id": a.envID}), "node"); n != nil {
		t.Fatalf("tenant b reads a's environment: %v", n)
	}
	b.owner.fail("NOT_FOUND", mSetVar, map[string]any{"e": a.envID, "n": "x", "t": "STRING", "v": "b"})
	b.owner.fail("NOT_FOUND", mUnsetVar, map[string]any{"e": a.envID, "n": "secretish"})
	b.owner.fail("NOT_FOUND", mArchiveEnv, map[string]any{"id": a.envID})
	b.owner.fail("NOT_FOUND", mUnarchive, map[string]any{"id": a.envID})
	b.owner.fail("NOT_FOUND", mUpdateEnv, map[string]any{"id": a.envID, "n": "taken"})
	b.owner.fail("NOT_FOUND", mPromote, map[string]any{"f": a.envID, "t": b.prodEnvID, "w": b.workflowID})
	b.owner.fail("NOT_FOUND", mPromote, map[string]any{"f": b.envID, "t": a.prodEnvID, "w": b.workflowID})
	b.owner.fail("NOT_FOUND", mPromote, map[string]any{"f": b.envID, "t": b.prodEnvID, "w": a.workflowID})
	// A key scoped to production with the admin role reads production's
	// variables only and sets none (tenant-wide administration).
	a.owner.ok(mSetVar, map[string]any{"e": a.prodEnvID, "n": "region", "t": "STRING", "v": "eu"})
	key := a.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "prod-admin", roles: [ADMIN], environmentID: $e}) { token } }`, map[string]any{"e": a.prodEnvID})
	scoped := newClient(t, 1, str(key, "createAPIKey.token"))
	if v := get(scoped.ok(qEnvVars, map[string]any{"id": a.prodEnvID}), "node.variables"); len(v.([]any)) != 1 {
		t.Fatalf("scoped key reads production's variables: %v", v)
	}
	if n := get(scoped.ok(qEnvVars, map[string]any{"id": a.envID}), "node"); n != nil {
		t.Fatalf("scoped key reads development: %v", n)
	}
	devVersions := edges(a.owner.ok(`query($id: ID!) { node(id: $id) { ... on Environment { variableVersions { edges { node { id } } } } } }`, map[string]any{"id": a.envID}), "node.variableVersions")
	if len(devVersions) != 1 {
		t.Fatalf("development's versions: %v", devVersions)
	}
	devVersion := devVersions[0]["id"].(string)
	if n := get(a.owner.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": devVersion}), "node.id"); n != devVersion {
		t.Fatalf("owner reads the version node: %v", n)
	}
	for _, c := range []*client{scoped, b.owner} {
		if n := get(c.ok(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": devVersion}), "node"); n != nil {
			t.Fatalf("another environment's or tenant's variables version is visible: %v", n)
		}
	}
	scoped.fail("FORBIDDEN", mSetVar, map[string]any{"e": a.prodEnvID, "n": "region", "t": "STRING", "v": "us"})
	scoped.fail("FORBIDDEN", mArchiveEnv, map[string]any{"id": a.prodEnvID})

	got := a.owner.ok(qEnvVars, map[string]any{"id": a.envID})
	if get(got, "node.varsVersion") != float64(1) || get(got, "node.archived") != false || str(got, "node.name") != "development" {
		t.Fatalf("a's environment changed: %v", got)
	}
}

// TestEnvironmentArchiveRename: an archived environment refuses new runs
// and deploys with a clear error and keeps its runs readable; unarchived it
// runs again. Rename and describe; bad and taken names refused.
func TestEnvironmentArchiveRename(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envs-archive")
	before := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "a"})
	engFinish(t, f.owner, before, "succeeded")

	arch := f.owner.ok(mArchiveEnv, map[string]any{"id": f.envID})
	if get(arch, "archiveEnvironment.archived") != true {
		t.Fatalf("archive: %v", arch)
	}
	r := f.owner.fail("VALIDATION", mStartRun, map[string]any{"w": f.workflowID, "e": f.envID, "i": map[string]any{"name": "b"}})
	if !hasProblemAt(r, "input.environmentID") || !strings.Contains(r.Raw, "archived") {
		t.Fatalf("start in an archived environment: %s", r.Raw)
	}
	r = f.owner.fail("VALIDATION", mDeploy, map[string]any{"v": f.versionID, "e": f.envID})
	if !strings.Contains(r.Raw, "archived") {
		t.Fatalf("deploy to an archived environment: %s", r.Raw)
	}
	f.owner.fail("VALIDATION", `mutation($id: ID!) { replayRun(input: {runID: $id, mode: LIVE}) { id } }`, map[string]any{"id": before})
	f.owner.ok(`mutation($id: ID!) { replayRun(input: {runID: $id, mode: SANDBOX}) { id } }`, map[string]any{"id": before})
	if st := str(f.owner.ok(qRun, map[string]any{"id": before}), "node.status"); st != "succeeded" {
		t.Fatalf("run of the archived environment: %v", st)
	}
	f.owner.ok(mSetVar, map[string]any{"e": f.envID, "n": "still", "t": "BOOLEAN", "v": true})

	f.owner.ok(mUnarchive, map[string]any{"id": f.envID})
	after := engStart(t, f.owner, f, f.workflowID, map[string]any{"name": "c"})
	engFinish(t, f.owner, after, "succeeded")

	up := f.owner.ok(mUpdateEnv, map[string]any{"id": f.envID, "n": "dev-two", "d": "where changes start"})
	if str(up, "updateEnvironment.name") != "dev-two" || str(up, "updateEnvironment.description") != "where changes start" {
		t.Fatalf("update: %v", up)
	}
	f.owner.fail("CONFLICT", mUpdateEnv, map[string]any{"id": f.envID, "n": "staging"})
	r = f.owner.fail("VALIDATION", mUpdateEnv, map[string]any{"id": f.envID, "n": "Bad Name", "d": strings.Repeat("d", 501)})
	if !hasProblemAt(r, "input.name") || !hasProblemAt(r, "input.description") {
		t.Fatalf("bad update: %s", r.Raw)
	}
	if str(f.owner.ok(qEnvVars, map[string]any{"id": f.envID}), "node.name") != "dev-two" {
		t.Fatal("refused update changed the name")
	}
	created := f.owner.ok(`mutation($d: String) { createEnvironment(input: {name: "qa", kind: staging, description: $d}) { id description archived varsVersion } }`, map[string]any{"d": "shared test bed"})
	if str(created, "createEnvironment.description") != "shared test bed" || get(created, "createEnvironment.archived") != false {
		t.Fatalf("create with description: %v", created)
	}
	r = f.owner.fail("VALIDATION", `mutation($d: String) { createEnvironment(input: {name: "qa2", kind: staging, description: $d}) { id } }`, map[string]any{"d": strings.Repeat("d", 501)})
	if !hasProblemAt(r, "input.description") {
		t.Fatalf("long description: %s", r.Raw)
	}
	for action, n := range map[string]float64{"environment.archive": 1, "environment.unarchive": 1, "environment.update": 1} {
		got := get(f.owner.ok(`query($a: String!) { auditLogs(where: {action: $a}) { totalCount } }`, map[string]any{"a": action}), "auditLogs.totalCount")
		if got != n {
			t.Errorf("audit %s: %v", action, got)
		}
	}
}

// TestPromoteDeploymentChecks: a promotion goes through the deploy checks
// (a required variable missing in the target, production needing an
// admin) and refuses bad input, writing nothing.
func TestPromoteDeploymentChecks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "envs-promote")
	envs := envIDs(t, f.owner)
	staging, prod := envs["staging"], envs["production"]
	srv := newScriptServer(t)
	wf := str(f.owner.ok(mCreateWF, map[string]any{"n": "promo", "s": "promo"}), "createWorkflow.id")
	v1 := str(f.owner.ok(mCreateVer, map[string]any{"w": wf, "d": varsDefinition()}), "createWorkflowVersion.id")
	f.owner.ok(mPublish, map[string]any{"id": v1})

	// Nothing deployed in staging yet.
	r := f.owner.fail("VALIDATION", mPromote, map[string]any{"f": staging, "t": prod, "w": wf})
	if !hasProblemAt(r, "input.fromEnvironmentID") {
		t.Fatalf("promote with nothing deployed: %s", r.Raw)
	}
	f.owner.ok(mSetVar, map[string]any{"e": staging, "n": "apiBase", "t": "STRING", "v": srv.URL + "/s"})
	f.owner.ok(mDeploy, map[string]any{"v": v1, "e": staging})

	r = f.owner.fail("VALIDATION", mPromote, map[string]any{"f": staging, "t": prod, "w": wf})
	if !hasProblemAt(r, "$.vars.apiBase") || !strings.Contains(r.Raw, "apiBase") {
		t.Fatalf("promote to production without apiBase: %s", r.Raw)
	}
	f.owner.fail("VALIDATION", mPromote, map[string]any{"f": staging, "t": staging, "w": wf})
	editor := newClient(t, 1, token(t, f.tenantID, "editor"))
	f.owner.ok(mSetVar, map[string]any{"e": prod, "n": "apiBase", "t": "STRING", "v": srv.URL + "/p"})
	editor.fail("FORBIDDEN", mPromote, map[string]any{"f": staging, "t": prod, "w": wf})
	if n := get(f.owner.ok(qEnvVars, map[string]any{"id": prod}), "node.deployments.totalCount"); n != float64(0) {
		t.Fatalf("refused promotions deployed: %v", n)
	}
	if n := get(f.owner.ok(`{ auditLogs(where: {action: "deployment.promote"}) { totalCount } }`, nil), "auditLogs.totalCount"); n != float64(0) {
		t.Fatalf("refused promotions audited: %v", n)
	}
	dep := f.owner.ok(mPromote, map[string]any{"f": staging, "t": prod, "w": wf})
	if str(dep, "promoteDeployment.version.id") != v1 {
		t.Fatalf("promote: %v", dep)
	}
}
