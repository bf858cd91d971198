package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	mCreateExport = `mutation($in: CreateExportInput!) { createExport(input: $in) { id status scope scopeID include createdBy expiresAt } }`
	qExport       = `query($id: ID!) { node(id: $id) { ... on Export { id status attempts error counts
		files { name kind count bytes sha256 } } } }`
	qExportURL = `query($id: ID!, $f: String!, $in: String) { node(id: $id) { ... on Export { downloadURL(file: $f, expiresIn: $in) { url expiresAt } } } }`
	qExports   = `{ exports(first: 100) { totalCount edges { node { id } } } }`
)

// download GETs a signed export path from an API server.
func download(t *testing.T, base, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// startManyRuns starts n runs of a workflow from 16 callers at once.
func startManyRuns(t *testing.T, c *client, wf, env string, n int) {
	t.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if _, err := c.tryOK(mStartRun, map[string]any{"w": wf, "e": env, "i": map[string]any{"n": i}}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

// TestExport: an admin exports a workflow's 1,000 runs with their events,
// steps, audit entries and cost; the worker writes gzipped NDJSON files
// and a manifest to the store; each file downloaded through a signed URL
// parses line by line, its lines match the manifest's count and its
// SHA-256 matches the manifest's and the API's. A short-lived URL expires
// (410), a tampered one is 403 like a made-up one, another tenant's admin
// cannot see, mint or fetch it, a non-admin is refused, and bad input is
// VALIDATION with the field path and writes nothing.
func TestExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "export")
	def := map[string]any{
		"schemaVersion": 1,
		"steps":         []any{map[string]any{"id": "double", "type": "transform", "output": map[string]any{"n": "input.n * 2"}}},
		"output":        "steps.double.output",
	}
	wf, _ := deployWorkflow(t, f, "export-one-step", def)
	from := time.Now().UTC().Add(-time.Second)
	const n = 1000
	began := time.Now()
	startManyRuns(t, f.owner, wf, f.envID, n)
	eventually(t, 5*time.Minute, func() (bool, string) {
		got := get(f.owner.ok(`query($w: ID!) { runs(where: {workflowID: $w, status: succeeded}) { totalCount } }`, map[string]any{"w": wf}), "runs.totalCount")
		return got == float64(n), fmt.Sprintf("succeeded runs: %v of %d", got, n)
	})
	t.Logf("%d runs started and finished in %s", n, time.Since(began).Round(time.Millisecond))
	to := time.Now().UTC().Add(time.Second)

	in := map[string]any{"scope": "WORKFLOW", "scopeID": wf, "from": from.Format(time.RFC3339Nano), "to": to.Format(time.RFC3339Nano),
		"include": []string{"RUNS", "EVENTS", "STEPS", "AUDIT", "COST"}}
	created := f.owner.ok(mCreateExport, map[string]any{"in": in})
	id := str(created, "createExport.id")
	if s := str(created, "createExport.status"); s != "QUEUED" {
		t.Fatalf("new export status %s, want QUEUED", s)
	}
	began = time.Now()
	var exp map[string]any
	eventually(t, 2*time.Minute, func() (bool, string) {
		exp, _ = get(f.owner.ok(qExport, map[string]any{"id": id}), "node").(map[string]any)
		if str(exp, "status") == "FAILED" {
			t.Fatalf("export failed: %v", exp)
		}
		return str(exp, "status") == "SUCCEEDED", fmt.Sprintf("export: %v", exp)
	})
	t.Logf("export written in %s", time.Since(began).Round(time.Millisecond))

	files := map[string]map[string]any{}
	for _, x := range exp["files"].([]any) {
		files[str(x, "name")] = x.(map[string]any)
	}
	if len(files) != 6 {
		t.Fatalf("files: %v, want 5 NDJSON files and the manifest", exp["files"])
	}
	base := server(0).url
	mint := func(file string, expiresIn any) string {
		r := f.owner.ok(qExportURL, map[string]any{"id": id, "f": file, "in": expiresIn})
		return str(r, "node.downloadURL.url")
	}
	// The manifest, through the other API server.
	code, body := download(t, server(1).url, mint("manifest.json", nil))
	if code != http.StatusOK {
		t.Fatalf("manifest: %d %s", code, body)
	}
	var manifest struct {
		ExportID string           `json:"exportID"`
		Scope    string           `json:"scope"`
		ScopeID  string           `json:"scopeID"`
		From     time.Time        `json:"from"`
		To       time.Time        `json:"to"`
		Counts   map[string]int64 `json:"counts"`
		Files    []struct {
			Name   string `json:"name"`
			Kind   string `json:"kind"`
			Count  int64  `json:"count"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	if err := json.Unmarshal(body, &manifest); err != nil {
		t.Fatalf("manifest: %v\n%s", err, body)
	}
	if manifest.ExportID != id || manifest.Scope != "WORKFLOW" || manifest.ScopeID != wf || len(manifest.Files) != 5 {
		t.Fatalf("manifest: %s", body)
	}
	sum := sha256.Sum256(body)
	if hex.EncodeToString(sum[:]) != str(files["manifest.json"], "sha256") {
		t.Fatalf("manifest SHA-256 differs from the export's")
	}
	lines := map[string][]map[string]any{}
	for _, mf := range manifest.Files {
		code, body := download(t, base, mint(mf.Name, nil))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", mf.Name, code, body)
		}
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != mf.SHA256 || got != str(files[mf.Name], "sha256") {
			t.Fatalf("%s: SHA-256 %s, manifest %s, API %s", mf.Name, got, mf.SHA256, str(files[mf.Name], "sha256"))
		}
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: %v", mf.Name, err)
		}
		sc := bufio.NewScanner(zr)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			var row map[string]any
			if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
				t.Fatalf("%s line %d does not parse: %v: %s", mf.Name, len(lines[mf.Kind])+1, err, sc.Text())
			}
			lines[mf.Kind] = append(lines[mf.Kind], row)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("%s: %v", mf.Name, err)
		}
		if int64(len(lines[mf.Kind])) != mf.Count || mf.Count != manifest.Counts[mf.Kind] || float64(mf.Count) != get(exp, "counts."+mf.Kind) {
			t.Fatalf("%s: %d lines, manifest file count %d, manifest counts %d, API %v", mf.Name, len(lines[mf.Kind]), mf.Count, manifest.Counts[mf.Kind], get(exp, "counts."+mf.Kind))
		}
	}
	if len(lines["RUNS"]) != n || len(lines["STEPS"]) != n {
		t.Fatalf("%d runs and %d steps exported, want %d each", len(lines["RUNS"]), len(lines["STEPS"]), n)
	}
	runIDs := map[string]bool{}
	for _, r := range lines["RUNS"] {
		if r["workflow_id"] != wf || r["tenant_id"] != f.tenantID || r["status"] != "succeeded" {
			t.Fatalf("run line outside the scope: %v", r)
		}
		runIDs[r["id"].(string)] = true
	}
	if len(runIDs) != n {
		t.Fatalf("%d distinct runs, want %d", len(runIDs), n)
	}
	for _, kind := range []string{"STEPS", "EVENTS"} {
		for _, r := range lines[kind] {
			if !runIDs[r["run_id"].(string)] {
				t.Fatalf("%s line of a run not exported: %v", kind, r)
			}
		}
	}
	if len(lines["EVENTS"]) < 3*n {
		t.Fatalf("%d events for %d runs, want at least 3 each", len(lines["EVENTS"]), n)
	}

	// A URL with a short life works, then expires: 410.
	short := mint("runs.ndjson.gz", "1s")
	eventually(t, 15*time.Second, func() (bool, string) {
		code, _ := download(t, base, short)
		return code == http.StatusGone, fmt.Sprintf("expired URL answered %d", code)
	})
	// A tampered URL, and the same URL for an export that does not exist,
	// answer alike: 403.
	good := mint("runs.ndjson.gz", nil)
	u, _ := url.Parse(good)
	q := u.Query()
	q.Set("exp", fmt.Sprint(time.Now().Add(time.Hour).Unix()))
	tampered := u.Path + "?" + q.Encode()
	missing := strings.Replace(good, id, "exp_01jzzzzzzzzzzzzzzzzzzzzzzz", 1)
	otherFile := strings.Replace(good, "runs.ndjson.gz", "steps.ndjson.gz", 1)
	for name, p := range map[string]string{"tampered expiry": tampered, "missing export": missing, "another file": otherFile} {
		if code, body := download(t, base, p); code != http.StatusForbidden || strings.Contains(string(body), id) {
			t.Errorf("%s: %d %s, want 403 saying nothing of the export", name, code, body)
		}
	}

	// Another tenant's admin: the export reads as missing.
	other := newFixture(t, "export-other")
	otherAdmin := newClient(t, 1, token(t, other.tenantID, "admin"))
	if got := get(otherAdmin.ok(qExport, map[string]any{"id": id}), "node"); got != nil {
		t.Fatalf("another tenant's admin sees the export: %v", got)
	}
	if got := get(otherAdmin.ok(qExports, nil), "exports.totalCount"); got != float64(0) {
		t.Fatalf("another tenant lists %v exports", got)
	}
	// Exporting this tenant's workflow from there: as unknown as a made-up id.
	inOther := map[string]any{"scope": "WORKFLOW", "scopeID": wf, "from": in["from"], "to": in["to"], "include": []string{"RUNS"}}
	r := otherAdmin.fail("VALIDATION", mCreateExport, map[string]any{"in": inOther})
	inMadeUp := map[string]any{"scope": "WORKFLOW", "scopeID": "wf_01jzzzzzzzzzzzzzzzzzzzzzzz", "from": in["from"], "to": in["to"], "include": []string{"RUNS"}}
	r2 := otherAdmin.fail("VALIDATION", mCreateExport, map[string]any{"in": inMadeUp})
	if problemMessage(r, "input.scopeID") == "" || problemMessage(r, "input.scopeID") != problemMessage(r2, "input.scopeID") {
		t.Fatalf("another tenant's workflow: %s; made-up id: %s", r.Raw, r2.Raw)
	}

	// Non-admins are refused; nothing is written.
	before := get(f.owner.ok(qExports, nil), "exports.totalCount")
	for _, role := range []string{"operator", "editor", "viewer"} {
		c := newClient(t, 0, token(t, f.tenantID, role))
		c.fail("FORBIDDEN", mCreateExport, map[string]any{"in": in})
		c.fail("FORBIDDEN", qExports, nil)
		c.fail("FORBIDDEN", qExport, map[string]any{"id": id})
	}
	// Bad input: VALIDATION at the field, nothing written.
	bad := []struct {
		path string
		edit func(map[string]any)
	}{
		{"input.to", func(m map[string]any) { m["from"], m["to"] = m["to"], m["from"] }},
		{"input.include", func(m map[string]any) { m["include"] = []string{} }},
		{"input.scopeID", func(m map[string]any) { m["scopeID"] = "wf_01jzzzzzzzzzzzzzzzzzzzzzzz" }},
		{"input.scopeID", func(m map[string]any) { m["scope"] = "ENVIRONMENT"; m["scopeID"] = other.envID }},
		{"input.scopeID", func(m map[string]any) { m["scope"] = "TENANT" }},
		{"input.to", func(m map[string]any) { m["to"] = from.Add(400 * 24 * time.Hour).Format(time.RFC3339) }},
	}
	for _, b := range bad {
		m := map[string]any{}
		for k, v := range in {
			m[k] = v
		}
		b.edit(m)
		r := f.owner.fail("VALIDATION", mCreateExport, map[string]any{"in": m})
		if problemMessage(r, b.path) == "" {
			t.Errorf("%v: no problem at %s: %s", m, b.path, r.Raw)
		}
	}
	if after := get(f.owner.ok(qExports, nil), "exports.totalCount"); after != before {
		t.Fatalf("refused creates wrote exports: %v then %v", before, after)
	}
	// Everything audited: the create and each URL minted.
	audits := edges(f.owner.ok(`{ auditLogs(first: 100, where: {targetID: "`+id+`"}) { edges { node { action actor } } } }`, nil), "auditLogs")
	count := map[string]int{}
	for _, a := range audits {
		count[str(a, "action")]++
	}
	if count["export.create"] != 1 || count["export.download_url"] < 8 || count["export.succeeded"] != 1 {
		t.Fatalf("audit entries of the export: %v", count)
	}
}
