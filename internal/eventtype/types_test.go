package eventtype_test

import (
	"bufio"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/eventtype"
)

// repoRoot is the module root, two levels above this package.
const repoRoot = "../.."

// readmeSection returns the lines of README.md from the heading that starts
// with heading up to the next heading of the same or a higher level.
func readmeSection(t *testing.T, heading string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	level := strings.Index(heading, " ")
	var lines []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if in {
			if n := strings.Index(l, " "); strings.HasPrefix(l, "#") && n > 0 && n <= level && strings.Trim(l[:n], "#") == "" {
				break
			}
			lines = append(lines, l)
		} else if strings.HasPrefix(l, heading) {
			in = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !in {
		t.Fatalf("README.md has no %q section", heading)
	}
	return lines
}

var typeName = regexp.MustCompile("`([a-z]+\\.[a-z_]+)`")

func set(ts []eventtype.Type) map[string]bool {
	m := map[string]bool{}
	for _, t := range ts {
		m[string(t)] = true
	}
	return m
}

func compare(t *testing.T, what string, readme, code map[string]bool) {
	t.Helper()
	for n := range code {
		if !readme[n] {
			t.Errorf("%s: the code has %q, the README does not list it", what, n)
		}
	}
	for n := range readme {
		if !code[n] {
			t.Errorf("%s: the README lists %q, the code has no such type", what, n)
		}
	}
}

// The README's "Run events" table lists every type the code has, and no
// other.
func TestReadmeListsEveryRunEvent(t *testing.T) {
	readme := map[string]bool{}
	for _, l := range readmeSection(t, "### Run events") {
		if !strings.HasPrefix(l, "| `") {
			continue
		}
		cell := strings.TrimSpace(strings.Split(l, "|")[1])
		m := typeName.FindStringSubmatch(cell)
		if m == nil || m[0] != cell {
			t.Errorf("README Run events row %q: first cell is not one event type", l)
			continue
		}
		if readme[m[1]] {
			t.Errorf("README lists %q twice", m[1])
		}
		readme[m[1]] = true
	}
	compare(t, "run events", readme, set(eventtype.All()))
}

// The README's webhook event type list is the one webhooks deliver.
func TestReadmeListsWebhookEventTypes(t *testing.T) {
	var para []string
	for _, l := range readmeSection(t, "## Webhooks") {
		if strings.HasPrefix(l, "Webhook event types") || len(para) > 0 {
			if strings.TrimSpace(l) == "" {
				break
			}
			para = append(para, l)
		}
	}
	if len(para) == 0 {
		t.Fatal(`README.md's Webhooks section has no "Webhook event types" paragraph`)
	}
	readme := map[string]bool{}
	for _, m := range typeName.FindAllStringSubmatch(strings.Join(para, " "), -1) {
		readme[m[1]] = true
	}
	compare(t, "webhook event types", readme, set(eventtype.Webhook()))
}

func TestWebhookTypesAreRunOrTenantEvents(t *testing.T) {
	all := eventtype.All()
	for _, w := range eventtype.Webhook() {
		if !slices.Contains(all, w) && !slices.Contains(eventtype.Tenant(), w) {
			t.Errorf("webhooks deliver %q, which is neither a run event nor a tenant event", w)
		}
		if !w.Delivered() {
			t.Errorf("%q.Delivered() = false", w)
		}
	}
	for _, a := range all {
		if a.Delivered() != slices.Contains(eventtype.Webhook(), a) {
			t.Errorf("%q.Delivered() disagrees with Webhook()", a)
		}
	}
	if eventtype.Type("run.start").Delivered() {
		t.Error(`"run.start" is delivered`)
	}
}

func TestTypesAreDottedLowerCaseAndUnique(t *testing.T) {
	seen := map[eventtype.Type]bool{}
	for _, a := range append(eventtype.All(), eventtype.Tenant()...) {
		if !typeName.MatchString("`" + string(a) + "`") {
			t.Errorf("%q is not dotted lower case", a)
		}
		if seen[a] {
			t.Errorf("%q listed twice", a)
		}
		seen[a] = true
	}
}

// Every run status has its event, named "run.<status>" (a wire name
// subscribers and webhook receivers derive from the status).
func TestForRunStatus(t *testing.T) {
	all := eventtype.All()
	for _, st := range []run.Status{run.StatusQueued, run.StatusRunning, run.StatusWaiting, run.StatusSucceeded, run.StatusFailed, run.StatusCancelled} {
		if err := run.StatusValidator(st); err != nil {
			t.Fatal(err)
		}
		got := eventtype.ForRunStatus(string(st))
		if string(got) != "run."+string(st) || !slices.Contains(all, got) {
			t.Errorf("ForRunStatus(%q) = %q", st, got)
		}
	}
	if got := eventtype.ForRunStatus("paused"); got != "" {
		t.Errorf(`ForRunStatus("paused") = %q, want ""`, got)
	}
}

// No Go code outside types.go spells an event type (or builds one from a
// category prefix such as "run."): it names the constant. Tests are exempt:
// they assert wire values.
func TestNoEventTypeLiteralsOutsideTypesFile(t *testing.T) {
	forbidden := set(append(eventtype.All(), eventtype.Tenant()...))
	for _, a := range append(eventtype.All(), eventtype.Tenant()...) {
		forbidden[strings.SplitN(string(a), ".", 2)[0]+"."] = true
	}
	self, err := filepath.Abs("types.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "testdata", "vendor":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		if abs, _ := filepath.Abs(path); abs == self {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			v, err := strconv.Unquote(lit.Value)
			if err == nil && forbidden[v] {
				t.Errorf("%s: event type literal %s: use the eventtype constant", fset.Position(lit.Pos()), lit.Value)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d Go files: is %s the module root?", checked, repoRoot)
	}
}
