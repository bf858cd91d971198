package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

const (
	mCreateTrigger = `mutation($in: CreateTriggerInput!) { createTrigger(input: $in) { secret trigger { id name path url enabled
		verification { scheme toleranceSeconds } dedup { key windowSeconds } inputMapping rateLimit { perSecond burst } } } }`
	mRotateTrigger     = `mutation($id: ID!, $s: String) { rotateTriggerSecret(id: $id, secret: $s) { secret trigger { id previousSecretExpiresAt } } }`
	qTriggerDeliveries = `query($id: ID!) { node(id: $id) { ... on Trigger { id deliveries(first: 100) { totalCount edges { node {
		id outcome verified reason duplicate filtered runID dedupKey headers body bodyBytes } } } } } }`
	qRunInput = `query($id: ID!) { node(id: $id) { ... on Run { id status input } } }`
	qRunsOfWF = `query($w: ID!) { runs(where: {workflowID: $w}) { totalCount } }`
	qTriggers = `{ triggers { totalCount edges { node { id } } } }`
)

// triggerDefinition takes {customer, amount} and echoes them.
func triggerDefinition() map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input": map[string]any{"type": "object", "required": []any{"customer", "amount"}, "properties": map[string]any{
			"customer": map[string]any{"type": "string"}, "amount": map[string]any{"type": "integer"}}},
		"steps": []any{
			map[string]any{"id": "echo", "type": "transform", "output": map[string]any{"who": "input.customer", "twice": "input.amount * 2"}},
		},
		"output": "steps.echo.output",
	}
}

// hookPost sends body to a trigger's path on server 0 with headers.
type hookAnswer struct {
	status int
	header http.Header
	body   map[string]any
}

func hookPost(t *testing.T, path string, body []byte, headers map[string]string) hookAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, server(0).url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := gqlHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := hookAnswer{status: resp.StatusCode, header: resp.Header}
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// standardSign returns Standard Webhooks headers for a message, signed by
// the specification's reference library.
func standardSign(t *testing.T, secret, id string, at time.Time, body []byte) map[string]string {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("secret %q: %v", secret, err)
	}
	sig, err := wh.Sign(id, at, body)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"webhook-id": id, "webhook-timestamp": strconv.FormatInt(at.Unix(), 10), "webhook-signature": sig}
}

func runCount(t *testing.T, c *client, workflowID string) int {
	t.Helper()
	n, _ := get(c.ok(qRunsOfWF, map[string]any{"w": workflowID}), "runs.totalCount").(float64)
	return int(n)
}

func deliveriesOf(t *testing.T, c *client, triggerID string) []map[string]any {
	t.Helper()
	return edges(c.ok(qTriggerDeliveries, map[string]any{"id": triggerID}), "node.deliveries")
}

// TestTriggerStandardWebhooks: a signed Standard Webhooks message starts a
// run with the mapped input; a bad signature or a stale timestamp is 401
// and starts nothing; the same message id twice starts one run; a filtered
// event starts nothing; after a rotation old and new secrets both verify;
// every delivery is recorded, without credentials.
func TestTriggerStandardWebhooks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "trg")
	wf, _ := deployWorkflow(t, f, "orders", triggerDefinition())
	created := f.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.envID, "name": "stripe-like orders",
		"verification": map[string]any{"scheme": "STANDARD_WEBHOOKS"},
		"filter":       `body.type != "ping"`,
		"inputMapping": map[string]any{"customer": "body.data.customer", "amount": "body.data.amount"},
		"rateLimit":    map[string]any{"perSecond": 1000, "burst": 1000},
	}})
	secret := str(created, "createTrigger.secret")
	trg := get(created, "createTrigger.trigger").(map[string]any)
	path, id := str(trg, "path"), str(trg, "id")
	if !strings.HasPrefix(secret, "whsec_") || !strings.HasPrefix(path, "/hooks/") || strings.Contains(path, f.tenantID) ||
		strings.Contains(path, strings.TrimPrefix(f.tenantID, "ten_")) || strings.Contains(path, id) {
		t.Fatalf("secret %q, path %q (tenant %s, trigger %s)", secret, path, f.tenantID, id)
	}
	if str(trg, "verification.scheme") != "STANDARD_WEBHOOKS" || get(trg, "verification.toleranceSeconds") != 300.0 || get(trg, "dedup.windowSeconds") != 86400.0 {
		t.Fatalf("defaults: %v", trg)
	}

	now := time.Now()
	body := []byte(`{"type":"order.created","data":{"customer":"acme","amount":21}}`)
	h := standardSign(t, secret, "msg_1", now, body)
	h["Authorization"] = "Bearer must-not-be-stored"
	first := hookPost(t, path, body, h)
	runID := first.header.Get("Sluice-Run-Id")
	if first.status != http.StatusAccepted || runID == "" || first.body["runID"] != runID {
		t.Fatalf("signed message: %d %v %v", first.status, first.header, first.body)
	}
	waitRun(t, f.owner, runID, 30*time.Second, "succeeded")
	run := get(f.owner.ok(qRunInput, map[string]any{"id": runID}), "node").(map[string]any)
	if in, _ := run["input"].(map[string]any); in["customer"] != "acme" || in["amount"] != 21.0 || len(in) != 2 {
		t.Fatalf("run input %v", run["input"])
	}

	// The same message id again (a retry, signed anew): one run.
	again := hookPost(t, path, body, standardSign(t, secret, "msg_1", time.Now(), body))
	if again.status != http.StatusOK || again.header.Get("Sluice-Duplicate") != "true" || again.body["runID"] != runID {
		t.Fatalf("duplicate: %d %v %v", again.status, again.header, again.body)
	}

	// A bad signature and a stale timestamp: 401, nothing started.
	bad := standardSign(t, secret, "msg_2", time.Now(), body)
	bad["webhook-signature"] = "v1," + base64.StdEncoding.EncodeToString(make([]byte, 32))
	if a := hookPost(t, path, body, bad); a.status != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d %v", a.status, a.body)
	}
	stale := standardSign(t, secret, "msg_3", time.Now().Add(-10*time.Minute), body)
	if a := hookPost(t, path, body, stale); a.status != http.StatusUnauthorized {
		t.Fatalf("stale timestamp: %d %v", a.status, a.body)
	}
	tampered := standardSign(t, secret, "msg_4", time.Now(), body)
	if a := hookPost(t, path, []byte(strings.Replace(string(body), "21", "2100", 1)), tampered); a.status != http.StatusUnauthorized {
		t.Fatalf("changed body: %d %v", a.status, a.body)
	}

	// A filtered event: recorded, answered with the header, no run.
	ping := []byte(`{"type":"ping"}`)
	if a := hookPost(t, path, ping, standardSign(t, secret, "msg_ping", time.Now(), ping)); a.status != http.StatusAccepted ||
		a.header.Get("Sluice-Filtered") != "true" || a.body["runID"] != nil {
		t.Fatalf("filtered: %d %v %v", a.status, a.header, a.body)
	}
	// Runs start in the delivery's transaction: every answer above came
	// after its commit, so the count is final.
	if n := runCount(t, f.owner, wf); n != 1 {
		t.Fatalf("%d runs after one accepted event, want 1", n)
	}

	// Rotation: during the overlap both secrets verify.
	rotated := f.owner.ok(mRotateTrigger, map[string]any{"id": id})
	newSecret := str(rotated, "rotateTriggerSecret.secret")
	if newSecret == "" || newSecret == secret || get(rotated, "rotateTriggerSecret.trigger.previousSecretExpiresAt") == nil {
		t.Fatalf("rotation: %v", rotated)
	}
	bodyOld := []byte(`{"type":"order.created","data":{"customer":"old","amount":1}}`)
	bodyNew := []byte(`{"type":"order.created","data":{"customer":"new","amount":2}}`)
	if a := hookPost(t, path, bodyOld, standardSign(t, secret, "msg_old", time.Now(), bodyOld)); a.status != http.StatusAccepted || a.body["runID"] == nil {
		t.Fatalf("old secret in the overlap: %d %v", a.status, a.body)
	}
	if a := hookPost(t, path, bodyNew, standardSign(t, newSecret, "msg_new", time.Now(), bodyNew)); a.status != http.StatusAccepted || a.body["runID"] == nil {
		t.Fatalf("new secret: %d %v", a.status, a.body)
	}

	// The deliveries, newest last (ids sort by time).
	defer triggerAfterRecords(t, f, id, path, secret, newSecret, runID, body)
	ds := deliveriesOf(t, f.owner, id)
	var outcomes []string
	for _, d := range ds {
		outcomes = append(outcomes, str(d, "outcome"))
	}
	want := []string{"started", "duplicate", "unverified", "unverified", "unverified", "filtered", "started", "started"}
	if !slices.Equal(outcomes, want) {
		t.Fatalf("outcomes %v, want %v", outcomes, want)
	}
	d0 := ds[0]
	hdrs, _ := d0["headers"].(map[string]any)
	if d0["runID"] != runID || d0["verified"] != true || d0["body"] != string(body) || d0["dedupKey"] != "webhook-id:msg_1" ||
		hdrs["webhook-id"] != "msg_1" || hdrs["authorization"] != nil {
		t.Fatalf("first delivery %v", d0)
	}
	if ds[1]["duplicate"] != true || ds[1]["runID"] != runID {
		t.Fatalf("duplicate delivery %v", ds[1])
	}
	if ds[2]["verified"] != false || ds[2]["body"] != nil || !strings.Contains(str(ds[2], "reason"), "signature") ||
		!strings.Contains(str(ds[3], "reason"), "too old") {
		t.Fatalf("unverified deliveries %v / %v", ds[2], ds[3])
	}
	if ds[5]["filtered"] != true || ds[5]["runID"] != nil {
		t.Fatalf("filtered delivery %v", ds[5])
	}

	// Unknown ids and oversized bodies.
	if a := hookPost(t, "/hooks/"+strings.Repeat("A", 43), body, nil); a.status != http.StatusNotFound {
		t.Fatalf("unknown hook: %d", a.status)
	}
	if a := hookPost(t, "/hooks/short", body, nil); a.status != http.StatusNotFound {
		t.Fatalf("malformed hook: %d", a.status)
	}
	big := bytes.Repeat([]byte("x"), 1<<20+1)
	if a := hookPost(t, path, big, nil); a.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("body over 1 MiB: %d", a.status)
	}

	// Latency of accepted deliveries (each stores the delivery and starts
	// its run in one transaction).
	var took []time.Duration
	for i := range 20 {
		b := []byte(`{"type":"order.created","data":{"customer":"c` + strconv.Itoa(i) + `","amount":` + strconv.Itoa(i) + `}}`)
		hs := standardSign(t, newSecret, "lat_"+strconv.Itoa(i), time.Now(), b)
		start := time.Now()
		if a := hookPost(t, path, b, hs); a.status != http.StatusAccepted {
			t.Fatalf("latency message %d: %d %v", i, a.status, a.body)
		}
		took = append(took, time.Since(start))
	}
	// The same for filtered events (stored, no run): the difference is
	// what starting the run in the delivery's transaction costs.
	var filtered []time.Duration
	for i := range 20 {
		b := []byte(`{"type":"ping","n":` + strconv.Itoa(i) + `}`)
		hs := standardSign(t, newSecret, "ping_"+strconv.Itoa(i), time.Now(), b)
		start := time.Now()
		if a := hookPost(t, path, b, hs); a.status != http.StatusAccepted {
			t.Fatalf("filtered message %d: %d %v", i, a.status, a.body)
		}
		filtered = append(filtered, time.Since(start))
	}
	slices.Sort(took)
	slices.Sort(filtered)
	t.Logf("delivery latency over %d: run started p50 %v, p90 %v, max %v; filtered p50 %v, p90 %v, max %v",
		len(took), took[len(took)/2], took[len(took)*9/10], took[len(took)-1],
		filtered[len(filtered)/2], filtered[len(filtered)*9/10], filtered[len(filtered)-1])
}

// TestTriggerRateLimitAndSchemes: over the rate a trigger answers 429 with
// Retry-After; a GitHub trigger deduplicates by X-GitHub-Delivery and a
// Stripe one by the event id (a stale Stripe timestamp is 401); a static
// token trigger never stores its token header; without a mapping the body
// is the input, and one that breaks the schema is recorded, not run.
func TestTriggerRateLimitAndSchemes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "trg-rl")
	wf, _ := deployWorkflow(t, f, "gh", triggerDefinition())
	gh := f.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.envID, "name": "github",
		"verification": map[string]any{"scheme": "GITHUB", "secret": "It's a Secret to Everybody"},
		"inputMapping": `{"customer": body.repo, "amount": int(body.n)}`,
		"rateLimit":    map[string]any{"perSecond": 0.01, "burst": 2},
	}})
	if get(gh, "createTrigger.secret") != nil {
		t.Fatalf("a secret given is not shown back: %v", gh)
	}
	path := str(gh, "createTrigger.trigger.path")
	body := []byte(`{"repo":"sluice","n":3}`)
	m := hmac.New(sha256.New, []byte("It's a Secret to Everybody"))
	m.Write(body)
	sig := "sha256=" + hexString(m.Sum(nil))
	a := hookPost(t, path, body, map[string]string{"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "d-1"})
	if a.status != http.StatusAccepted || a.body["runID"] == nil {
		t.Fatalf("github: %d %v", a.status, a.body)
	}
	b := hookPost(t, path, body, map[string]string{"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "d-1"})
	if b.status != http.StatusOK || b.header.Get("Sluice-Duplicate") != "true" {
		t.Fatalf("github redelivery: %d %v", b.status, b.body)
	}
	c := hookPost(t, path, body, map[string]string{"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "d-2"})
	if c.status != http.StatusTooManyRequests || c.header.Get("Retry-After") == "" {
		t.Fatalf("over the rate: %d %v %v", c.status, c.header, c.body)
	}
	// Stripe: the endpoint secret is Stripe's (required); the event id dedups.
	st := f.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.envID, "name": "stripe",
		"verification": map[string]any{"scheme": "STRIPE", "secret": "whsec_from_stripe_dashboard"},
		"inputMapping": `{"customer": body.data.object.customer, "amount": body.data.object.amount}`,
	}})
	spath := str(st, "createTrigger.trigger.path")
	stripeSign := func(b []byte, at time.Time) map[string]string {
		ts := strconv.FormatInt(at.Unix(), 10)
		m := hmac.New(sha256.New, []byte("whsec_from_stripe_dashboard"))
		m.Write([]byte(ts + "."))
		m.Write(b)
		return map[string]string{"Stripe-Signature": "t=" + ts + ",v1=" + hexString(m.Sum(nil))}
	}
	evt := []byte(`{"id":"evt_1","type":"charge.succeeded","data":{"object":{"customer":"cus_1","amount":500}}}`)
	if a := hookPost(t, spath, evt, stripeSign(evt, time.Now())); a.status != http.StatusAccepted || a.body["runID"] == nil {
		t.Fatalf("stripe: %d %v", a.status, a.body)
	}
	if a := hookPost(t, spath, evt, stripeSign(evt, time.Now())); a.status != http.StatusOK || a.header.Get("Sluice-Duplicate") != "true" {
		t.Fatalf("stripe retry: %d %v", a.status, a.body)
	}
	if a := hookPost(t, spath, evt, stripeSign(evt, time.Now().Add(-6*time.Minute))); a.status != http.StatusUnauthorized {
		t.Fatalf("stripe stale: %d %v", a.status, a.body)
	}

	if n := runCount(t, f.owner, wf); n != 2 {
		t.Fatalf("%d runs, want 2 (one GitHub delivery, one Stripe event)", n)
	}

	tok := f.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.envID, "name": "token",
		"verification": map[string]any{"scheme": "STATIC_TOKEN", "header": "X-Token"},
	}})
	secret, tid := str(tok, "createTrigger.secret"), str(tok, "createTrigger.trigger.id")
	tpath := str(tok, "createTrigger.trigger.path")
	if a := hookPost(t, tpath, []byte(`{"customer":"x","amount":1}`), map[string]string{"X-Token": "wrong-token"}); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", a.status)
	}
	if a := hookPost(t, tpath, []byte(`{"customer":"x","amount":1}`), map[string]string{"X-Token": secret}); a.status != http.StatusAccepted || a.body["runID"] == nil {
		t.Fatalf("token: %d %v", a.status, a.body)
	}
	// The body is the input when no mapping is set; a body that does not
	// match the workflow's schema is recorded, and starts nothing.
	if a := hookPost(t, tpath, []byte(`{"customer":"x"}`), map[string]string{"X-Token": secret}); a.status != http.StatusAccepted || a.body["outcome"] != "input_rejected" {
		t.Fatalf("schema mismatch: %d %v", a.status, a.body)
	}
	for _, d := range deliveriesOf(t, f.owner, tid) {
		if hs, _ := d["headers"].(map[string]any); hs["x-token"] != nil {
			t.Fatalf("token header stored: %v", d)
		}
		if d["outcome"] == "input_rejected" && !strings.Contains(str(d, "reason"), "amount") {
			t.Fatalf("schema mismatch reason: %v", d)
		}
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestTriggerIsolation: another tenant cannot read, list, update, rotate,
// delete or see the deliveries of a trigger.
func TestTriggerIsolation(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "trg-iso-a"), newFixture(t, "trg-iso-b")
	wf, _ := deployWorkflow(t, a, "iso", triggerDefinition())
	created := a.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": a.envID, "name": "iso",
		"verification": map[string]any{"scheme": "STANDARD_WEBHOOKS"},
		"inputMapping": map[string]any{"customer": "body.c", "amount": "body.n"},
	}})
	secret, id, path := str(created, "createTrigger.secret"), str(created, "createTrigger.trigger.id"), str(created, "createTrigger.trigger.path")
	body := []byte(`{"c":"iso","n":1}`)
	if r := hookPost(t, path, body, standardSign(t, secret, "iso_1", time.Now(), body)); r.status != http.StatusAccepted {
		t.Fatalf("delivery: %d %v", r.status, r.body)
	}
	ds := deliveriesOf(t, a.owner, id)
	if len(ds) != 1 {
		t.Fatalf("A sees %d deliveries", len(ds))
	}
	deliveryID := str(ds[0], "id")

	for _, nid := range []string{id, deliveryID} {
		if r := b.owner.do(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": nid}); get(r.Data, "node") != nil || len(r.Errors) > 0 {
			t.Errorf("B reads %s: %s", nid, r.Raw)
		}
	}
	if n := get(b.owner.ok(qTriggers, nil), "triggers.totalCount"); n != 0.0 {
		t.Errorf("B lists %v triggers", n)
	}
	b.owner.fail("NOT_FOUND", `mutation($id: ID!) { updateTrigger(input: {id: $id, name: "taken"}) { id } }`, map[string]any{"id": id})
	b.owner.fail("NOT_FOUND", `mutation($id: ID!) { rotateTriggerSecret(id: $id) { secret } }`, map[string]any{"id": id})
	b.owner.fail("NOT_FOUND", `mutation($id: ID!) { deleteTrigger(id: $id) }`, map[string]any{"id": id})
	// A's trigger is unchanged and still answers with its secret.
	if n := get(a.owner.ok(`query($id: ID!) { node(id: $id) { ... on Trigger { name } } }`, map[string]any{"id": id}), "node.name"); n != "iso" {
		t.Fatalf("A's trigger name %v", n)
	}
	body2 := []byte(`{"c":"iso","n":2}`)
	if r := hookPost(t, path, body2, standardSign(t, secret, "iso_2", time.Now(), body2)); r.status != http.StatusAccepted {
		t.Fatalf("after B's attempts: %d %v", r.status, r.body)
	}
	// A viewer of A cannot manage triggers.
	viewerA := newClient(t, 0, token(t, a.tenantID, "viewer"))
	viewerA.fail("FORBIDDEN", `mutation($id: ID!) { deleteTrigger(id: $id) }`, map[string]any{"id": id})
}

// TestTriggerBadInput: an unknown scheme, CEL that does not compile, a
// workflow of another tenant: VALIDATION with the path, nothing written.
func TestTriggerBadInput(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "trg-bad-a"), newFixture(t, "trg-bad-b")
	wf, _ := deployWorkflow(t, a, "bad", triggerDefinition())
	otherWF, _ := deployWorkflow(t, b, "other", triggerDefinition())
	base := func() map[string]any {
		return map[string]any{"workflowID": wf, "environmentID": a.envID, "name": "bad",
			"verification": map[string]any{"scheme": "STANDARD_WEBHOOKS"}}
	}
	audits := func() any { return get(a.owner.ok(`{ auditLogs { totalCount } }`, nil), "auditLogs.totalCount") }
	before := audits()
	cases := []struct {
		name, path string
		edit       func(m map[string]any)
	}{
		{"unknown scheme", "input.verification.scheme", func(m map[string]any) { m["verification"] = map[string]any{"scheme": "CARRIER_PIGEON"} }},
		{"filter does not compile", "input.filter", func(m map[string]any) { m["filter"] = "body.type ==" }},
		{"dedup key does not compile", "input.dedup.key", func(m map[string]any) { m["dedup"] = map[string]any{"key": "headers["} }},
		{"mapping field does not compile", "input.inputMapping.amount", func(m map[string]any) {
			m["inputMapping"] = map[string]any{"customer": "body.c", "amount": "body.n +"}
		}},
		{"workflow of another tenant", "input.workflowID", func(m map[string]any) { m["workflowID"] = otherWF }},
		{"environment of another tenant", "input.environmentID", func(m map[string]any) { m["environmentID"] = b.envID }},
		{"stripe without its secret", "input.verification.secret", func(m map[string]any) { m["verification"] = map[string]any{"scheme": "STRIPE"} }},
		{"hmac without a header", "input.verification.header", func(m map[string]any) { m["verification"] = map[string]any{"scheme": "HMAC"} }},
		{"window too short", "input.dedup.windowSeconds", func(m map[string]any) { m["dedup"] = map[string]any{"windowSeconds": 5} }},
		{"rate out of range", "input.rateLimit.perSecond", func(m map[string]any) { m["rateLimit"] = map[string]any{"perSecond": 5000} }},
	}
	for _, tc := range cases {
		in := base()
		tc.edit(in)
		r := a.owner.fail("VALIDATION", mCreateTrigger, map[string]any{"in": in})
		if !hasProblemAt(r, tc.path) {
			t.Errorf("%s: no problem at %s: %s", tc.name, tc.path, r.Raw)
		}
	}
	if n := get(a.owner.ok(qTriggers, nil), "triggers.totalCount"); n != 0.0 {
		t.Fatalf("bad input wrote %v triggers", n)
	}
	if after := audits(); after != before {
		t.Fatalf("bad input wrote audit entries: %v -> %v", before, after)
	}
	// And an update with CEL that does not compile changes nothing.
	id := str(a.owner.ok(mCreateTrigger, map[string]any{"in": base()}), "createTrigger.trigger.id")
	a.owner.ok(`mutation($id: ID!) { updateTrigger(input: {id: $id, enabled: true}) { id } }`, map[string]any{"id": id})
	a.owner.ok(`mutation($id: ID!) { rotateTriggerSecret(id: $id) { secret } }`, map[string]any{"id": id})
	var actions []string
	for _, e := range edges(a.owner.ok(`query($id: String!) { auditLogs(where: {targetID: $id}) { edges { node { action actor } } } }`, map[string]any{"id": id}), "auditLogs") {
		actions = append(actions, str(e, "action"))
	}
	slices.Sort(actions)
	if !slices.Equal(actions, []string{"trigger.create", "trigger.rotate_secret", "trigger.update"}) {
		t.Fatalf("audit entries of the trigger: %v", actions)
	}
	r := a.owner.fail("VALIDATION", `mutation($id: ID!) { updateTrigger(input: {id: $id, filter: "1 +", name: "renamed"}) { id } }`, map[string]any{"id": id})
	if !hasProblemAt(r, "input.filter") {
		t.Errorf("update: %s", r.Raw)
	}
	if n := get(a.owner.ok(`query($id: ID!) { node(id: $id) { ... on Trigger { name eventFilter } } }`, map[string]any{"id": id}), "node.name"); n != "bad" {
		t.Fatalf("bad update renamed the trigger to %v", n)
	}
}

// triggerAfterRecords runs after the delivery records were checked: the
// overlap and the dedup window end (their recorded instants moved back in
// Postgres), and a deleted trigger's URL answers 404.
func triggerAfterRecords(t *testing.T, f *fixture, id, path, oldSecret, newSecret, runID string, body []byte) {
	if t.Failed() {
		return
	}
	owner := ownerDB(t)
	if _, err := owner.Exec(`UPDATE triggers SET previous_secret_expires_at = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	late := []byte(`{"type":"order.created","data":{"customer":"late","amount":3}}`)
	if a := hookPost(t, path, late, standardSign(t, oldSecret, "msg_late", time.Now(), late)); a.status != http.StatusUnauthorized {
		t.Fatalf("old secret after the overlap: %d %v", a.status, a.body)
	}
	// After the window the same message id is new again; its run's
	// idempotency key is the same, so it is the same run, not a second.
	if _, err := owner.Exec(`UPDATE trigger_deliveries SET received_at = received_at - interval '25 hours' WHERE trigger_id = $1 AND dedup_key = 'webhook-id:msg_1'`, id); err != nil {
		t.Fatal(err)
	}
	before := runCount(t, f.owner, str(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Trigger { workflowID } } }`, map[string]any{"id": id}), "node.workflowID"))
	a := hookPost(t, path, body, standardSign(t, newSecret, "msg_1", time.Now(), body))
	if a.status != http.StatusAccepted || a.header.Get("Sluice-Duplicate") != "" || a.body["runID"] != runID {
		t.Fatalf("msg_1 after the window: %d %v %v", a.status, a.header, a.body)
	}
	after := runCount(t, f.owner, str(f.owner.ok(`query($id: ID!) { node(id: $id) { ... on Trigger { workflowID } } }`, map[string]any{"id": id}), "node.workflowID"))
	if after != before {
		t.Fatalf("runs %d -> %d after msg_1 came back", before, after)
	}
	f.owner.ok(`mutation($id: ID!) { deleteTrigger(id: $id) }`, map[string]any{"id": id})
	if a := hookPost(t, path, body, standardSign(t, newSecret, "msg_gone", time.Now(), body)); a.status != http.StatusNotFound {
		t.Fatalf("deleted trigger: %d %v", a.status, a.body)
	}
}

// TestTriggerEnvironmentScope: a key scoped to one environment neither
// sees nor manages the triggers (and deliveries) of another, nor creates
// one there.
func TestTriggerEnvironmentScope(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "trg-scope")
	wf, ver := deployWorkflow(t, f, "scoped", triggerDefinition())
	f.owner.ok(mDeploy, map[string]any{"v": ver, "e": f.prodEnvID})
	prod := f.owner.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.prodEnvID, "name": "prod",
		"verification": map[string]any{"scheme": "STATIC_TOKEN", "header": "X-Token"},
	}})
	prodID, prodPath, prodSecret := str(prod, "createTrigger.trigger.id"), str(prod, "createTrigger.trigger.path"), str(prod, "createTrigger.secret")
	if a := hookPost(t, prodPath, []byte(`{"customer":"p","amount":1}`), map[string]string{"X-Token": prodSecret}); a.status != http.StatusAccepted {
		t.Fatalf("prod delivery: %d %v", a.status, a.body)
	}
	deliveryID := str(deliveriesOf(t, f.owner, prodID)[0], "id")

	key := f.owner.ok(`mutation($e: ID!) { createAPIKey(input: {name: "dev-editor", roles: [EDITOR, OPERATOR], environmentID: $e}) { token } }`, map[string]any{"e": f.envID})
	scoped := newClient(t, 0, str(key, "createAPIKey.token"))
	for _, nid := range []string{prodID, deliveryID} {
		if r := scoped.do(`query($id: ID!) { node(id: $id) { id } }`, map[string]any{"id": nid}); get(r.Data, "node") != nil {
			t.Errorf("scoped key reads %s: %s", nid, r.Raw)
		}
	}
	if n := get(scoped.ok(qTriggers, nil), "triggers.totalCount"); n != 0.0 {
		t.Errorf("scoped key lists %v triggers", n)
	}
	scoped.fail("NOT_FOUND", `mutation($id: ID!) { rotateTriggerSecret(id: $id) { secret } }`, map[string]any{"id": prodID})
	r := scoped.fail("VALIDATION", mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.prodEnvID, "name": "sneaky",
		"verification": map[string]any{"scheme": "STANDARD_WEBHOOKS"},
	}})
	if !hasProblemAt(r, "input.environmentID") {
		t.Errorf("create in another environment: %s", r.Raw)
	}
	// In its own environment it may.
	scoped.ok(mCreateTrigger, map[string]any{"in": map[string]any{
		"workflowID": wf, "environmentID": f.envID, "name": "dev",
		"verification": map[string]any{"scheme": "STANDARD_WEBHOOKS"},
	}})
}
