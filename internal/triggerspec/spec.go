// Package triggerspec holds the stored shapes of an inbound webhook trigger's
// settings (verification, dedup, input mapping, rate limit). It is a leaf:
// the Ent schema stores these types as JSON, internal/triggers interprets them.
package triggerspec

// Schemes of verification. Their names are part of the API.
const (
	SchemeStandardWebhooks = "STANDARD_WEBHOOKS"
	SchemeStripe           = "STRIPE"
	SchemeGitHub           = "GITHUB"
	SchemeSlack            = "SLACK"
	SchemeHMAC             = "HMAC"
	SchemeStaticToken      = "STATIC_TOKEN"
)

// Verification says how a request proves it comes from the sender. The
// secret itself is sealed apart (Trigger.secret); this holds no secret.
type Verification struct {
	Scheme string `json:"scheme"`
	// Header carries the signature (HMAC) or the token (STATIC_TOKEN).
	Header string `json:"header,omitempty"`
	// Algorithm of HMAC: sha1, sha256 or sha512.
	Algorithm string `json:"algorithm,omitempty"`
	// Encoding of the HMAC signature: hex or base64.
	Encoding string `json:"encoding,omitempty"`
	// Prefix before the signature in the header (e.g. "sha256=").
	Prefix string `json:"prefix,omitempty"`
	// Signed is what HMAC signs: "body" (default), or "timestamp.body"
	// with the Unix timestamp from TimestampHeader.
	Signed string `json:"signed,omitempty"`
	// TimestampHeader carries the Unix timestamp signed with "timestamp.body".
	TimestampHeader string `json:"timestampHeader,omitempty"`
	// ToleranceSeconds bounds the age of a signed timestamp. If zero, 300.
	ToleranceSeconds int `json:"toleranceSeconds,omitempty"`
}

// Dedup says how two deliveries are the same event.
type Dedup struct {
	// Key is a CEL expression over headers and body; empty means the
	// scheme's delivery id header, else sha256 of the body.
	Key string `json:"key,omitempty"`
	// WindowSeconds is how long a key is remembered. If zero, 86400.
	WindowSeconds int64 `json:"windowSeconds,omitempty"`
}

// InputMapping makes the run input: one CEL expression for the whole input
// (Expr), or one per top-level field (Fields). Neither: the body is the input.
type InputMapping struct {
	Expr   string            `json:"expr,omitempty"`
	Fields map[string]string `json:"fields,omitempty"`
}

// RateLimit bounds the requests a trigger accepts.
type RateLimit struct {
	// PerSecond is the sustained rate. If zero, 10.
	PerSecond float64 `json:"perSecond,omitempty"`
	// Burst is how many may come at once. If zero, 20.
	Burst int `json:"burst,omitempty"`
}

// Rate returns the sustained rate with its default.
func (r RateLimit) Rate() float64 {
	if r.PerSecond <= 0 {
		return 10
	}
	return r.PerSecond
}

// BurstOrDefault returns the burst with its default.
func (r RateLimit) BurstOrDefault() int {
	if r.Burst <= 0 {
		return 20
	}
	return r.Burst
}
