package triggers

import (
	"net/http"
	"testing"
	"time"

	spec "github.com/sluicehq/sluice/internal/triggerspec"
)

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// GitHub's documented test values ("Validating webhook deliveries"):
// secret "It's a Secret to Everybody", payload "Hello, World!".
func TestVerifyGitHubDocumentedVector(t *testing.T) {
	v := spec.Verification{Scheme: spec.SchemeGitHub}
	secret := []string{"It's a Secret to Everybody"}
	body := []byte("Hello, World!")
	good := hdr("X-Hub-Signature-256", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	if err := Verify(v, secret, good, body, time.Now()); err != nil {
		t.Fatalf("documented vector: %v", err)
	}
	if err := Verify(v, secret, good, []byte("Hello, World?"), time.Now()); !IsUnverified(err) {
		t.Fatalf("changed body verified: %v", err)
	}
	if err := Verify(v, []string{"another"}, good, body, time.Now()); !IsUnverified(err) {
		t.Fatalf("wrong secret verified: %v", err)
	}
	if err := Verify(v, secret, hdr(), body, time.Now()); !IsUnverified(err) {
		t.Fatalf("missing header verified: %v", err)
	}
}

// Stripe documents the scheme (Stripe-Signature "t=...,v1=...,v0=...", v1 =
// hex HMAC-SHA256 of "<t>.<payload>" with the endpoint secret, v0 ignored)
// and its example header's timestamp, but no secret/payload/signature
// triple; the signature here was computed independently of this code.
func TestVerifyStripeVector(t *testing.T) {
	v := spec.Verification{Scheme: spec.SchemeStripe}
	secret := []string{"whsec_test_secret"}
	body := []byte(`{"id": "evt_test_webhook", "object": "event"}`)
	at := time.Unix(1492774577, 0)
	const sig = "c137b1b62277d523cf8fed4dfbd0170a9a5b8a380e00cc3711d4bf0652f2ce7a"
	header := "t=1492774577,v1=" + sig + ",v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
	if err := Verify(v, secret, hdr("Stripe-Signature", header), body, at.Add(time.Minute)); err != nil {
		t.Fatalf("vector: %v", err)
	}
	// Several v1 signatures (Stripe sends one per active secret).
	two := "t=1492774577,v1=" + "00" + sig[2:] + ",v1=" + sig
	if err := Verify(v, secret, hdr("Stripe-Signature", two), body, at); err != nil {
		t.Fatalf("second v1: %v", err)
	}
	if err := Verify(v, secret, hdr("Stripe-Signature", header), body, at.Add(6*time.Minute)); !IsUnverified(err) {
		t.Fatalf("stale timestamp verified: %v", err)
	}
	if err := Verify(v, secret, hdr("Stripe-Signature", "t=1492774577,v0="+sig), body, at); !IsUnverified(err) {
		t.Fatalf("v0 alone verified: %v", err)
	}
}

// The Standard Webhooks specification's example message.
func TestVerifyStandardWebhooksVector(t *testing.T) {
	v := spec.Verification{Scheme: spec.SchemeStandardWebhooks}
	secret := []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
	body := []byte(`{"test": 2432232314}`)
	h := hdr("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp", "1614265330",
		"webhook-signature", "v1,bm9ub3NlbnNl v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	at := time.Unix(1614265330, 0)
	if err := Verify(v, secret, h, body, at); err != nil {
		t.Fatalf("vector: %v", err)
	}
	// Old and new secret during a rotation: either verifies.
	if err := Verify(v, []string{"whsec_" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", secret[0]}, h, body, at); err != nil {
		t.Fatalf("second secret: %v", err)
	}
	if err := Verify(v, secret, h, body, at.Add(-6*time.Minute)); !IsUnverified(err) {
		t.Fatalf("future timestamp verified: %v", err)
	}
	if err := Verify(v, secret, h, body, at.Add(5*time.Minute+time.Second)); !IsUnverified(err) {
		t.Fatalf("stale timestamp verified: %v", err)
	}
}

// Slack's documented example ("Verifying requests from Slack").
func TestVerifySlackDocumentedVector(t *testing.T) {
	v := spec.Verification{Scheme: spec.SchemeSlack}
	secret := []string{"8f742231b10e8888abcd99yyyzzz85a5"}
	body := []byte("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
	h := hdr("X-Slack-Request-Timestamp", "1531420618", "X-Slack-Signature", "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503")
	at := time.Unix(1531420618, 0)
	if err := Verify(v, secret, h, body, at); err != nil {
		t.Fatalf("documented vector: %v", err)
	}
	if err := Verify(v, secret, h, body, at.Add(10*time.Minute)); !IsUnverified(err) {
		t.Fatalf("stale timestamp verified: %v", err)
	}
}

func TestVerifyGenericHMACAndToken(t *testing.T) {
	body := []byte("Hello, World!")
	// GitHub's vector again through the generic scheme (sha256, hex, prefix).
	v := spec.Verification{Scheme: spec.SchemeHMAC, Header: "X-Sig", Algorithm: "sha256", Encoding: "hex", Prefix: "sha256="}
	h := hdr("X-Sig", "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	if err := Verify(v, []string{"It's a Secret to Everybody"}, h, body, time.Now()); err != nil {
		t.Fatalf("generic hex: %v", err)
	}
	v.Algorithm = "sha1"
	if err := Verify(v, []string{"It's a Secret to Everybody"}, h, body, time.Now()); !IsUnverified(err) {
		t.Fatalf("sha256 signature verified as sha1: %v", err)
	}
	tok := spec.Verification{Scheme: spec.SchemeStaticToken, Header: "Authorization", Prefix: "Bearer "}
	if err := Verify(tok, []string{"s3cret"}, hdr("Authorization", "Bearer s3cret"), body, time.Now()); err != nil {
		t.Fatalf("token: %v", err)
	}
	if err := Verify(tok, []string{"s3cret"}, hdr("Authorization", "Bearer s3creT"), body, time.Now()); !IsUnverified(err) {
		t.Fatalf("wrong token verified: %v", err)
	}
}
