package triggers

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/errs"
	spec "github.com/sluicehq/sluice/internal/triggerspec"
)

func TestRateLimitBurstThenRate(t *testing.T) {
	tr := &ent.Trigger{RateLimit: spec.RateLimit{PerSecond: 2, Burst: 3}}
	now := time.Unix(1000, 0)
	for i := range 3 {
		if _, ok := allow(tr, now); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
		tat := nextTAT(tr, now)
		tr.RateTat = &tat
	}
	wait, ok := allow(tr, now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("4th at once: ok %v, wait %v (want 500ms)", ok, wait)
	}
	if _, ok := allow(tr, now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refused after the wait it was told")
	}
}

func TestDedupKeyDefaults(t *testing.T) {
	ctx := context.Background()
	body := []byte(`{"id":"evt_1","type":"x"}`)
	act := newActivation(map[string]string{}, nil, body, "application/json")
	cases := []struct {
		scheme string
		h      http.Header
		want   string
	}{
		{spec.SchemeStandardWebhooks, http.Header{"Webhook-Id": {"msg_1"}}, "webhook-id:msg_1"},
		{spec.SchemeGitHub, http.Header{"X-Github-Delivery": {"d-1"}}, "github-delivery:d-1"},
		{spec.SchemeStripe, http.Header{}, "stripe-event:evt_1"},
		{spec.SchemeHMAC, http.Header{}, "sha256:"},
	}
	for _, c := range cases {
		tr := &ent.Trigger{Verification: spec.Verification{Scheme: c.scheme}}
		k, err := dedupKey(ctx, tr, Request{Header: c.h, Body: body}, act)
		if err != nil || len(k) < len(c.want) || k[:len(c.want)] != c.want {
			t.Errorf("%s: key %q (%v), want prefix %q", c.scheme, k, err, c.want)
		}
	}
	slack := []byte(`{"event_id":"Ev1"}`)
	tr := &ent.Trigger{Verification: spec.Verification{Scheme: spec.SchemeSlack}}
	if k, _ := dedupKey(ctx, tr, Request{Body: slack}, newActivation(nil, nil, slack, "application/json")); k != "slack-event:Ev1" {
		t.Errorf("slack key %q", k)
	}
	tr = &ent.Trigger{Dedup: spec.Dedup{Key: `body.type + ":" + body.id`}}
	if k, err := dedupKey(ctx, tr, Request{Body: body}, act); err != nil || k != "x:evt_1" {
		t.Errorf("CEL key %q, %v", k, err)
	}
}

func TestInputMapping(t *testing.T) {
	ctx := context.Background()
	act := newActivation(map[string]string{"x-tenant": "acme"}, url.Values{"src": {"q"}},
		[]byte(`{"data":{"amount":21,"ratio":0.5}}`), "application/json")
	in, err := mapInput(ctx, spec.InputMapping{Fields: map[string]string{
		"amount": "body.data.amount * 2", "ratio": "body.data.ratio", "who": "headers['x-tenant']", "src": "query.src"}}, act)
	if err != nil {
		t.Fatal(err)
	}
	if in["amount"] != int64(42) || in["ratio"] != 0.5 || in["who"] != "acme" || in["src"] != "q" {
		t.Fatalf("mapped %#v", in)
	}
	if _, err := mapInput(ctx, spec.InputMapping{Expr: `"not an object"`}, act); err == nil {
		t.Fatal("a string accepted as the input")
	}
	form := newActivation(nil, nil, []byte("a=1&b=two"), "application/x-www-form-urlencoded")
	if in, err := mapInput(ctx, spec.InputMapping{}, form); err != nil || in["b"] != "two" {
		t.Fatalf("form body %v, %v", in, err)
	}
}

func TestStoredHeadersDropCredentials(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer x"}, "Cookie": {"c"}, "X-Token": {"t"}, "Webhook-Id": {"m"}}
	got := storedHeaders(h, spec.Verification{Scheme: spec.SchemeStaticToken, Header: "X-Token"})
	if len(got) != 1 || got["webhook-id"] != "m" {
		t.Fatalf("stored %v", got)
	}
}

func TestCheckVerificationPaths(t *testing.T) {
	cases := []struct {
		in   VerificationInput
		path string
	}{
		{VerificationInput{Verification: spec.Verification{Scheme: "NOPE"}}, "input.verification.scheme"},
		{VerificationInput{Verification: spec.Verification{Scheme: spec.SchemeSlack}}, "input.verification.secret"},
		{VerificationInput{Verification: spec.Verification{Scheme: spec.SchemeHMAC, Header: "X-Sig", Algorithm: "md5"}}, "input.verification.algorithm"},
		{VerificationInput{Verification: spec.Verification{Scheme: spec.SchemeHMAC, Header: "X-Sig", Signed: "timestamp.body"}}, "input.verification.timestampHeader"},
	}
	for _, c := range cases {
		_, _, err := checkVerification(c.in)
		e, ok := err.(*errs.Error)
		if !ok || e.Code != errs.Validation || len(e.Problems) == 0 || e.Problems[0].Path != c.path {
			t.Errorf("%+v: %v, want VALIDATION at %s", c.in.Verification, err, c.path)
		}
	}
	secret, generated, err := checkVerification(VerificationInput{Verification: spec.Verification{Scheme: spec.SchemeStandardWebhooks}})
	if err != nil || !generated {
		t.Fatalf("generated: %v %v", generated, err)
	}
	if _, err := StandardSecretKey(secret); err != nil {
		t.Fatalf("generated secret %q: %v", secret, err)
	}
}

func TestTruncateKeepsTextStorable(t *testing.T) {
	if got := truncate("a\x00b\xffc", 100); got != "ab\uFFFDc" {
		t.Fatalf("got %q", got)
	}
	if got := truncate("héllo", 2); got != "h" {
		t.Fatalf("cut inside a rune: %q", got)
	}
}

func TestHasNUL(t *testing.T) {
	if !hasNUL(map[string]any{"a": []any{"x\x00"}}) || hasNUL(map[string]any{"a": []any{"x", int64(1)}}) {
		t.Fatal("hasNUL")
	}
}
