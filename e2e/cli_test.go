package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// cliRun runs the binary with extra environment (later entries win) and
// returns stdout, stderr and the exit error. A command that does not end in
// a minute is killed and fails the test, so a server that should have
// refused to start cannot hang the suite.
func cliRun(t *testing.T, extra []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.bin, args...)
	cmd.Env = append(baseEnv(), extra...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("sluice %v did not exit:\nstdout: %s\nstderr: %s", args, out.String(), errb.String())
	}
	return out.String(), errb.String(), err
}

// cliManifest returns the example manifest with a unique slug, edited by
// the replacements (old, new, ...), written to a temporary file.
func cliManifest(t *testing.T, slug string, replacements ...string) string {
	t.Helper()
	raw, err := os.ReadFile("../tenants/examples/acme.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(raw), "\nslug: acme\n", "\nslug: "+slug+"\n", 1)
	if !strings.Contains(s, "slug: "+slug) {
		t.Fatal("acme.yaml no longer has `slug: acme`")
	}
	for i := 0; i+1 < len(replacements); i += 2 {
		if !strings.Contains(s, replacements[i]) {
			t.Fatalf("acme.yaml has no %q", replacements[i])
		}
		s = strings.Replace(s, replacements[i], replacements[i+1], 1)
	}
	path := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliListed counts the lines of `sluice tenant list` for slug.
func cliListed(t *testing.T, slug string) int {
	t.Helper()
	out, errOut, err := cliRun(t, nil, "tenant", "list")
	if err != nil {
		t.Fatalf("tenant list: %v\n%s", err, errOut)
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if fields := strings.Split(line, "\t"); len(fields) >= 2 && fields[1] == slug {
			n++
		}
	}
	return n
}

var cliJWT = regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`)

// cliMint runs `sluice token mint` and returns the token, checking that it
// is the only output.
func cliMint(t *testing.T, tenant, roles string) string {
	t.Helper()
	out, errOut, err := cliRun(t, nil, "token", "mint", "--tenant", tenant, "--role", roles)
	if err != nil {
		t.Fatalf("token mint: %v\n%s%s", err, out, errOut)
	}
	tok := strings.TrimSuffix(out, "\n")
	if !cliJWT.MatchString(tok) {
		t.Fatalf("token mint printed more than a JWT: %q", out)
	}
	if errOut != "" {
		t.Errorf("token mint wrote to stderr: %q", errOut)
	}
	return tok
}

func TestCLITenantApply(t *testing.T) {
	t.Parallel()
	slug := "acme-" + randHex(4)
	path := cliManifest(t, slug)

	out, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", path)
	if err != nil {
		t.Fatalf("first apply: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{"created tenant " + slug, "created environment production-eu", "created environment staging",
		"added member alice@acme.example", "added member bob@acme.example", "added member carol@acme.example"} {
		if !strings.Contains(out, want) {
			t.Errorf("first apply output lacks %q:\n%s", want, out)
		}
	}
	owner := newClient(t, 0, cliMint(t, slug, "owner"))
	v := owner.ok(`{ viewer { roles tenant { id slug name retentionDays monthlyBudgetMicroUSD slaDefaults } } }`, nil)
	if str(v, "viewer.tenant.slug") != slug || str(v, "viewer.tenant.name") != "Acme Support Automation" ||
		get(v, "viewer.tenant.retentionDays") != float64(180) || get(v, "viewer.tenant.monthlyBudgetMicroUSD") != float64(2_500_000_000) ||
		get(v, "viewer.tenant.slaDefaults.runDuration") != "10m" {
		t.Errorf("tenant after apply: %v", v)
	}
	if l := fmt.Sprint(get(owner.ok(`{ concurrencyLimits { name limit } }`, nil), "concurrencyLimits")); l != "[map[limit:5 name:crm-api]]" {
		t.Errorf("concurrency limits after apply: %s", l)
	}
	envs := map[string]string{}
	for _, e := range edges(owner.ok(qEnvironments, nil), "environments") {
		envs[str(e, "name")] = str(e, "kind")
	}
	want := map[string]string{"development": "development", "staging": "staging", "production": "production", "production-eu": "production"}
	if len(envs) != len(want) {
		t.Errorf("environments: %v, want %v", envs, want)
	}
	for name, kind := range want {
		if envs[name] != kind {
			t.Errorf("environment %s: kind %q, want %q", name, envs[name], kind)
		}
	}
	// The production environment holds the manifest's variables, as its
	// first variables version; the tenant default SLA policy rolls back
	// releases at the manifest's severity.
	vars := owner.ok(`{ environments(where: {name: "production"}) { edges { node { variables { name type value } } } } }`, nil)
	if got := fmt.Sprint(get(edges(vars, "environments")[0], "variables")); got != "[map[name:apiBase type:STRING value:https://api.acme.example] map[name:maxItems type:INTEGER value:50]]" {
		t.Errorf("production variables after apply: %s", got)
	}
	if s := get(owner.ok(`{ slaPolicies { edges { node { objectives { releaseRollback { severity } } } } } }`, nil), "slaPolicies"); !strings.Contains(fmt.Sprint(s), "severity:CRITICAL") {
		t.Errorf("tenant default policy's releaseRollback: %v", s)
	}
	// The retention block: the tenant level and development's override.
	pol := fmt.Sprint(get(owner.ok(`{ retentionPolicies { scope payloadDays effective { payloadDays runDays auditDays } } }`, nil), "retentionPolicies"))
	if pol != "[map[effective:map[auditDays:400 payloadDays:30 runDays:180] payloadDays:30 scope:TENANT] map[effective:map[auditDays:400 payloadDays:7 runDays:180] payloadDays:7 scope:ENVIRONMENT]]" {
		t.Errorf("retention policies after apply: %s", pol)
	}
	// Members are added through the control plane: audited like addMember.
	if logs := edges(owner.ok(qHookAudit, map[string]any{"a": "member.add"}), "auditLogs"); len(logs) != 3 {
		t.Errorf("member.add audit entries after apply: %d, want 3", len(logs))
	}
	members := map[string][]string{}
	for _, m := range edges(owner.ok(`{ members { edges { node { subject roles } } } }`, nil), "members") {
		var roles []string
		for _, r := range get(m, "roles").([]any) {
			roles = append(roles, r.(string))
		}
		members[str(m, "subject")] = roles
	}
	if !slices.Equal(members["alice@acme.example"], []string{"owner"}) || !slices.Equal(members["bob@acme.example"], []string{"editor", "operator"}) ||
		!slices.Equal(members["carol@acme.example"], []string{"viewer"}) || len(members) != 3 {
		t.Errorf("members: %v", members)
	}

	// Applying again changes nothing.
	out, errOut, err = cliRun(t, nil, "tenant", "apply", "-f", path)
	if err != nil {
		t.Fatalf("second apply: %v\n%s%s", err, out, errOut)
	}
	for _, word := range []string{"created", "added", "->"} {
		if strings.Contains(out, word) {
			t.Errorf("second apply reports a change (%q):\n%s", word, out)
		}
	}
	if n := cliListed(t, slug); n != 1 {
		t.Errorf("tenant list shows %s %d times", slug, n)
	}
	if n := get(owner.ok(`{ environments { totalCount } }`, nil), "environments.totalCount"); n != float64(4) {
		t.Errorf("environments after the second apply: %v", n)
	}

	// Changing values updates the tenant in place.
	renamed := cliManifest(t, slug, "name: Acme Support Automation", "name: Acme Renamed", "retentionDays: 180", "retentionDays: 200",
		"value: 50}", "value: 75}")
	out, errOut, err = cliRun(t, nil, "tenant", "apply", "-f", renamed)
	if err != nil {
		t.Fatalf("apply renamed: %v\n%s%s", err, out, errOut)
	}
	if !strings.Contains(out, "set variables of production: maxItems (version 2)") {
		t.Errorf("apply with a changed variable:\n%s", out)
	}
	v = newClient(t, 1, cliMint(t, slug, "viewer")).ok(`{ viewer { roles tenant { id slug name retentionDays } } }`, nil)
	if str(v, "viewer.tenant.name") != "Acme Renamed" || get(v, "viewer.tenant.retentionDays") != float64(200) || str(v, "viewer.tenant.slug") != slug {
		t.Errorf("tenant after rename: %v", v)
	}
	if n := cliListed(t, slug); n != 1 {
		t.Errorf("tenant list shows %s %d times after rename", slug, n)
	}

	// A manifest that would leave the tenant without an owner is refused,
	// and changes nothing.
	t.Run("last owner kept", func(t *testing.T) {
		demoted := cliManifest(t, slug, "name: Acme Support Automation", "name: No Owner", "roles: [owner]", "roles: [admin]")
		out, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", demoted)
		if err == nil || !strings.Contains(errOut, "last owner") {
			t.Fatalf("demoting the last owner: err %v\n%s%s", err, out, errOut)
		}
		if name := str(owner.ok(`{ viewer { tenant { name } } }`, nil), "viewer.tenant.name"); name != "Acme Renamed" {
			t.Errorf("refused apply changed the tenant name to %q", name)
		}
	})

	// A manifest that fails while applying leaves the tenant as it was.
	t.Run("failed apply writes nothing", func(t *testing.T) {
		bad := cliManifest(t, slug, "name: Acme Support Automation", "name: Half Applied",
			"name: production-eu\n    kind: production", "name: production-eu\n    kind: staging")
		out, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", bad)
		if err == nil {
			t.Fatalf("changing an environment's kind succeeded:\n%s", out)
		}
		if !strings.Contains(errOut, "production-eu") {
			t.Errorf("error does not name the environment: %s", errOut)
		}
		v := owner.ok(`{ viewer { tenant { name } } }`, nil)
		if name := str(v, "viewer.tenant.name"); name != "Acme Renamed" {
			t.Errorf("failed apply changed the tenant name to %q", name)
		}
	})
}

func TestCLITenantApplyRejectsBadManifests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		replacements []string
		want         []string // substrings of the error
	}{
		{"unknown field", []string{"retentionDays: 180", "retentionDays: 180\ncolour: blue"}, []string{"colour"}},
		{"unknown nested field", []string{"monthlyUSD: 2500", "monthlyUSD: 2500\n  currency: EUR"}, []string{"currency"}},
		{"bad environment kind", []string{"name: staging\n    kind: staging", "name: staging\n    kind: stage"}, []string{"environments[1].kind", "stage"}},
		{"bad environment name", []string{"name: production-eu", "name: Production EU"}, []string{"environments[3].name"}},
		{"unknown member role", []string{"roles: [viewer]", "roles: [superuser]"}, []string{"members[2].roles[0]", "superuser"}},
		{"unknown escalation role", []string{"escalateTo: [admin, owner]", "escalateTo: [admin, boss]"}, []string{"sla.escalateTo[1]", "boss"}},
		{"bad duration", []string{"runDuration: 10m", "runDuration: ten minutes"}, []string{"sla.runDuration"}},
		{"bad retention", []string{"retentionDays: 180", "retentionDays: -1"}, []string{"retentionDays"}},
		{"retention payload past runDays", []string{"payloadDays: 30", "payloadDays: 365"}, []string{"retention.payloadDays"}},
		{"retention unknown environment", []string{"development: {payloadDays: 7}", "dev: {payloadDays: 7}"}, []string{"retention.environments.dev"}},
		{"retention audit per environment", []string{"development: {payloadDays: 7}", "development: {auditDays: 7}"}, []string{"retention.environments.development.auditDays"}},
		{"not YAML", []string{"members:", "members: [unclosed"}, []string{"parse manifest"}},
		{"bad variable type", []string{"{type: integer, value: 50}", "{type: integer, value: fifty}"}, []string{"environments[2].vars.maxItems"}},
		{"bad variable name", []string{"maxItems:", "max-items:"}, []string{"environments[2].vars.max-items"}},
		{"bad release rollback severity", []string{"releaseRollback: critical", "releaseRollback: dire"}, []string{"sla.releaseRollback", "dire"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			slug := "bad-" + randHex(4)
			path := cliManifest(t, slug, tt.replacements...)
			out, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", path)
			if err == nil {
				t.Fatalf("apply succeeded:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error does not mention %q:\n%s", w, errOut)
				}
			}
			if strings.Contains(out, "created") || strings.Contains(out, "added") {
				t.Errorf("rejected manifest reported changes:\n%s", out)
			}
			if n := cliListed(t, slug); n != 0 {
				t.Errorf("rejected manifest created tenant %s", slug)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		_, errOut, err := cliRun(t, nil, "tenant", "apply", "-f", filepath.Join(t.TempDir(), "nope.yaml"))
		if err == nil || !strings.Contains(errOut, "nope.yaml") {
			t.Errorf("missing file: err %v, stderr %q", err, errOut)
		}
	})
}

func TestCLITokenMint(t *testing.T) {
	t.Parallel()
	slug := "mint-" + randHex(3)
	out, err := cli("tenant", "create", "--slug", slug, "--name", "Mint "+slug)
	if err != nil {
		t.Fatalf("tenant create: %v\n%s", err, out)
	}
	tenantID := strings.TrimSpace(out)

	editor := newClient(t, 1, cliMint(t, slug, "editor"))
	v := editor.ok(`{ viewer { subject roles tenant { id slug } } }`, nil)
	if roles, _ := get(v, "viewer.roles").([]any); len(roles) != 1 || roles[0] != "editor" {
		t.Errorf("roles: %v", get(v, "viewer.roles"))
	}
	if str(v, "viewer.tenant.id") != tenantID || str(v, "viewer.tenant.slug") != slug {
		t.Errorf("tenant: %v", v)
	}
	// Editors manage workflows but not environments.
	editor.ok(mCreateWF, map[string]any{"n": "Minted", "s": "minted"})
	editor.fail("FORBIDDEN", `mutation { createEnvironment(input: {name: "qa", kind: staging}) { id } }`, nil)

	// The tenant id works as well as the slug.
	if tok := cliMint(t, tenantID, "viewer"); str(newClient(t, 0, tok).ok(`{ viewer { tenant { slug } } }`, nil), "viewer.tenant.slug") != slug {
		t.Error("token minted by tenant id names another tenant")
	}

	for _, bad := range [][]string{
		{"token", "mint", "--tenant", slug, "--role", "superuser"},
		{"token", "mint", "--tenant", "no-such-" + randHex(3), "--role", "viewer"},
		{"token", "mint", "--tenant", slug},
		{"token", "mint", "--role", "viewer"},
		{"token", "issue"},
	} {
		out, errOut, err := cliRun(t, nil, bad...)
		if err == nil {
			t.Errorf("%v succeeded: %s", bad, out)
		}
		if cliJWT.MatchString(strings.TrimSpace(out)) {
			t.Errorf("%v printed a token", bad)
		}
		if strings.TrimSpace(errOut) == "" {
			t.Errorf("%v failed without a message", bad)
		}
	}
}

func TestCLIMigrateStatus(t *testing.T) {
	t.Parallel()
	out, errOut, err := cliRun(t, nil, "migrate", "status")
	if err != nil {
		t.Fatalf("migrate status: %v\n%s", err, errOut)
	}
	files, err := filepath.Glob("../migrations/*.sql")
	if err != nil || len(files) < 2 {
		t.Fatalf("migrations: %v %v", files, err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for _, f := range files {
		name := filepath.Base(f)
		found := false
		for _, l := range lines {
			if strings.Contains(l, name) {
				found = true
				if !strings.Contains(l, "applied") {
					t.Errorf("%s is not applied: %q", name, l)
				}
			}
		}
		if !found {
			t.Errorf("migrate status does not list %s:\n%s", name, out)
		}
	}
	if _, errOut, err := cliRun(t, nil, "migrate", "sideways"); err == nil || !strings.Contains(errOut, "sideways") {
		t.Errorf("unknown migrate command: err %v, stderr %q", err, errOut)
	}
}

func TestCLIServeRefusesUnsafeProduction(t *testing.T) {
	t.Parallel()
	unset := []string{"SLUICE_ADDR=127.0.0.1:0", "SLUICE_JWT_SECRET=", "SLUICE_MASTER_KEYS=", "SLUICE_MASTER_KEY_ID="}
	tests := []struct {
		name  string
		extra []string
		want  []string
	}{
		{"no secrets", append([]string{"SLUICE_ENV=production"}, unset...),
			[]string{"SLUICE_JWT_JWKS_URL", "SLUICE_MASTER_KEYS", "SLUICE_MASTER_KEY_ID"}},
		{"SLUICE_ENV unset means production", append([]string{"SLUICE_ENV="}, unset...),
			[]string{"SLUICE_JWT_JWKS_URL", "SLUICE_MASTER_KEYS"}},
		{"development JWT secret", []string{"SLUICE_ADDR=127.0.0.1:0", "SLUICE_ENV=production",
			"SLUICE_JWT_SECRET=sluice-development-secret-do-not-use-in-production"}, []string{"SLUICE_JWT_SECRET", "SLUICE_MASTER_KEYS"}},
		{"short JWT secret", []string{"SLUICE_ADDR=127.0.0.1:0", "SLUICE_ENV=production", "SLUICE_JWT_SECRET=short"},
			[]string{"SLUICE_JWT_SECRET", "32"}},
		{"unknown SLUICE_ENV", []string{"SLUICE_ADDR=127.0.0.1:0", "SLUICE_ENV=prod"}, []string{"SLUICE_ENV"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, err := cliRun(t, tt.extra, "serve")
			if err == nil {
				t.Fatalf("serve exited cleanly:\n%s", out)
			}
			if strings.Contains(out, "listening on") {
				t.Errorf("serve started listening:\n%s", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error does not name %s:\n%s", w, errOut)
				}
			}
		})
	}
}

func TestCLIUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		want []string // in stderr
	}{
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`, "Usage: sluice", "tenant apply -f FILE"}},
		{nil, []string{"Usage: sluice", "no command"}},
		{[]string{"tenant"}, []string{"usage: sluice tenant"}},
		{[]string{"tenant", "delete"}, []string{`"delete"`, "create, apply or list"}},
		{[]string{"serve", "--bogus"}, []string{"bogus"}},
	}
	for _, tt := range tests {
		_, errOut, err := cliRun(t, nil, tt.args...)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("sluice %v: want a non-zero exit, got %v", tt.args, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("sluice %v: stderr lacks %q:\n%s", tt.args, w, errOut)
			}
		}
	}
	out, _, err := cliRun(t, nil, "help")
	if err != nil || !strings.Contains(out, "tenant apply -f FILE") || !strings.Contains(out, "token mint") {
		t.Errorf("help: %v\n%s", err, out)
	}
}
