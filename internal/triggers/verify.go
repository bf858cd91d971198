package triggers

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"

	spec "github.com/sluicehq/sluice/internal/triggerspec"
)

// Verification of inbound webhooks. Every scheme checks the raw bytes of
// the body as received, compares in constant time, and (where the scheme
// signs a timestamp) refuses a timestamp more than the tolerance away from
// now. A trigger holds one or two secrets (two during a rotation's overlap):
// a request verifies when any of them does.

// errUnverified is why a request did not verify; its message is recorded on
// the delivery and is safe to show (it never holds a secret).
type errUnverified struct{ reason string }

func (e *errUnverified) Error() string { return e.reason }

func unverified(reason string) error { return &errUnverified{reason} }

// IsUnverified reports whether err says a request failed verification.
func IsUnverified(err error) bool {
	var u *errUnverified
	return errors.As(err, &u)
}

// defaultTolerance bounds the age of signed timestamps.
const defaultTolerance = 5 * time.Minute

func tolerance(v spec.Verification) time.Duration {
	if v.ToleranceSeconds > 0 {
		return time.Duration(v.ToleranceSeconds) * time.Second
	}
	return defaultTolerance
}

// Verify checks a request's headers and raw body against the scheme in v
// with any of secrets, at now.
func Verify(v spec.Verification, secrets []string, h http.Header, body []byte, now time.Time) error {
	if len(secrets) == 0 {
		return unverified("the trigger has no secret")
	}
	switch v.Scheme {
	case spec.SchemeStandardWebhooks:
		return verifyStandard(v, secrets, h, body, now)
	case spec.SchemeStripe:
		return verifyStripe(v, secrets, h, body, now)
	case spec.SchemeGitHub:
		return verifyGitHub(secrets, h, body)
	case spec.SchemeSlack:
		return verifySlack(v, secrets, h, body, now)
	case spec.SchemeHMAC:
		return verifyHMAC(v, secrets, h, body, now)
	case spec.SchemeStaticToken:
		return verifyToken(v, secrets, h)
	}
	return unverified("unknown verification scheme")
}

func checkTimestamp(raw string, v spec.Verification, now time.Time) error {
	if raw == "" {
		return unverified("the timestamp is missing")
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil {
		return unverified("the timestamp is not a Unix time in seconds")
	}
	ts := time.Unix(sec, 0)
	tol := tolerance(v)
	if ts.Before(now.Add(-tol)) {
		return unverified("the timestamp is too old")
	}
	if ts.After(now.Add(tol)) {
		return unverified("the timestamp is too far in the future")
	}
	return nil
}

func mac(newHash func() hash.Hash, key []byte, parts ...[]byte) []byte {
	m := hmac.New(newHash, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// StandardSecretKey returns the HMAC key of a Standard Webhooks secret:
// base64 after the "whsec_" prefix.
func StandardSecretKey(secret string) ([]byte, error) {
	raw, _ := strings.CutPrefix(secret, "whsec_")
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) == 0 {
		return nil, errors.New("a Standard Webhooks secret is whsec_ followed by base64")
	}
	return key, nil
}

// verifyStandard: webhook-signature holds space-separated "v1,<base64
// HMAC-SHA256 of id.timestamp.body>" (https://www.standardwebhooks.com).
func verifyStandard(v spec.Verification, secrets []string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || sigs == "" {
		return unverified("the webhook-id or webhook-signature header is missing")
	}
	if err := checkTimestamp(ts, v, now); err != nil {
		return err
	}
	signed := []byte(id + "." + ts + ".")
	for _, s := range secrets {
		key, err := StandardSecretKey(s)
		if err != nil {
			continue
		}
		want := mac(sha256.New, key, signed, body)
		for _, sig := range strings.Fields(sigs) {
			version, b64, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return unverified("no signature matches")
}

// verifyStripe: Stripe-Signature is "t=<unix>,v1=<hex>[,v1=...][,v0=...]",
// the v1 signatures HMAC-SHA256 of "<t>.<body>" keyed with the endpoint
// secret as given (whsec_... included).
func verifyStripe(v spec.Verification, secrets []string, h http.Header, body []byte, now time.Time) error {
	header := h.Get("Stripe-Signature")
	if header == "" {
		return unverified("the Stripe-Signature header is missing")
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = val
		case "v1":
			if b, err := hex.DecodeString(val); err == nil {
				sigs = append(sigs, b)
			}
		}
	}
	if err := checkTimestamp(ts, v, now); err != nil {
		return err
	}
	if len(sigs) == 0 {
		return unverified("the Stripe-Signature header has no v1 signature")
	}
	for _, s := range secrets {
		want := mac(sha256.New, []byte(s), []byte(ts+"."), body)
		for _, got := range sigs {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return unverified("no signature matches")
}

// verifyGitHub: X-Hub-Signature-256 is "sha256=<hex HMAC-SHA256 of body>".
// GitHub signs no timestamp.
func verifyGitHub(secrets []string, h http.Header, body []byte) error {
	header := h.Get("X-Hub-Signature-256")
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return unverified("the X-Hub-Signature-256 header is missing")
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return unverified("the signature is not hex")
	}
	for _, s := range secrets {
		if hmac.Equal(got, mac(sha256.New, []byte(s), body)) {
			return nil
		}
	}
	return unverified("no signature matches")
}

// verifySlack: X-Slack-Signature is "v0=<hex HMAC-SHA256 of
// v0:<X-Slack-Request-Timestamp>:<body>>".
func verifySlack(v spec.Verification, secrets []string, h http.Header, body []byte, now time.Time) error {
	ts := h.Get("X-Slack-Request-Timestamp")
	hexSig, ok := strings.CutPrefix(h.Get("X-Slack-Signature"), "v0=")
	if !ok {
		return unverified("the X-Slack-Signature header is missing")
	}
	if err := checkTimestamp(ts, v, now); err != nil {
		return err
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return unverified("the signature is not hex")
	}
	for _, s := range secrets {
		if hmac.Equal(got, mac(sha256.New, []byte(s), []byte("v0:"+ts+":"), body)) {
			return nil
		}
	}
	return unverified("no signature matches")
}

func hashOf(alg string) func() hash.Hash {
	switch alg {
	case "sha1":
		return sha1.New
	case "sha512":
		return sha512.New
	default:
		return sha256.New
	}
}

// verifyHMAC: the header holds prefix + the signature (hex or base64) of
// the body, or of "<timestamp>.<body>" with the timestamp header.
func verifyHMAC(v spec.Verification, secrets []string, h http.Header, body []byte, now time.Time) error {
	raw, ok := strings.CutPrefix(strings.TrimSpace(h.Get(v.Header)), v.Prefix)
	if !ok || raw == "" {
		return unverified("the " + v.Header + " header is missing")
	}
	var got []byte
	var err error
	if v.Encoding == "base64" {
		got, err = base64.StdEncoding.DecodeString(raw)
	} else {
		got, err = hex.DecodeString(raw)
	}
	if err != nil {
		return unverified("the signature is not " + encodingOrHex(v.Encoding))
	}
	var prefix []byte
	if v.Signed == "timestamp.body" {
		ts := h.Get(v.TimestampHeader)
		if err := checkTimestamp(ts, v, now); err != nil {
			return err
		}
		prefix = []byte(ts + ".")
	}
	for _, s := range secrets {
		if hmac.Equal(got, mac(hashOf(v.Algorithm), []byte(s), prefix, body)) {
			return nil
		}
	}
	return unverified("no signature matches")
}

func encodingOrHex(e string) string {
	if e == "" {
		return "hex"
	}
	return e
}

// verifyToken: the header holds the secret itself (optionally after a
// prefix such as "Bearer "). Compared as SHA-256 digests so the time taken
// says nothing about the token's length either.
func verifyToken(v spec.Verification, secrets []string, h http.Header) error {
	got, ok := strings.CutPrefix(h.Get(v.Header), v.Prefix)
	if !ok || got == "" {
		return unverified("the " + v.Header + " header is missing")
	}
	g := sha256.Sum256([]byte(got))
	for _, s := range secrets {
		w := sha256.Sum256([]byte(s))
		if subtle.ConstantTimeCompare(g[:], w[:]) == 1 {
			return nil
		}
	}
	return unverified("the token does not match")
}
