// Package ids makes Sluice's public identifiers: a short type prefix and a ULID
// ("wf_01JD..."). The prefix lets node(id:) resolve a type without a lookup and
// tells a user what an id is; the ULID sorts by creation time.
package ids

import (
	"crypto/rand"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Prefixes of every id type. They are part of the public API: never rename one.
const (
	Tenant            = "ten"
	Member            = "mem"
	APIKey            = "key"
	Environment       = "env"
	Workflow          = "wf"
	WorkflowVersion   = "wfv"
	Deployment        = "dep"
	Credential        = "cred"
	CredentialVersion = "credv"
	AuditLog          = "aud"
	Run               = "run"
	StepRun           = "stp"
	StepAttempt       = "att"
	RunEvent          = "evt"
	ApprovalRequest   = "apr"
	ModelPrice        = "mp"
	ModelCall         = "mc"
	WebhookEndpoint   = "whe"
	WebhookDelivery   = "whd"
	WebhookAttempt    = "wha"
	InboundEvent      = "iev"
	EventWait         = "wt"
	MapItem           = "mit"
	EscalationPolicy  = "esp"
	Escalation        = "esc"
	PagerDutySend     = "pds"
	SLAPolicy         = "slp"
	Incident          = "inc"
	SLABreach         = "slb"

	EnvironmentVariableVersion = "envv"
	Release                    = "rel"
	Evaluation                 = "evl"
	EvaluationExample          = "evx"
	ResponseCacheEntry         = "rce"
	ResponseShape              = "rsh"
	DriftChange                = "dch"
	RateLimit                  = "rl"
	RateLimitCooldown          = "rlc"
	Schedule                   = "sch"
	ScheduleAction             = "sca"
	Trigger                    = "trg"
	TriggerDelivery            = "trd"
	WorkflowPause              = "wfp"
	WorkflowConcurrency        = "wfc"
	BulkOperation              = "bop"
	BulkOperationItem          = "boi"
	RetentionPolicy            = "rtp"
	RetentionPass              = "rtr"
	ConcurrencyLimit           = "cl"
)

var (
	mu      sync.Mutex
	entropy = ulid.Monotonic(rand.Reader, 0)
)

// New returns a fresh id with the given prefix.
func New(prefix string) string {
	mu.Lock()
	id := ulid.MustNew(ulid.Timestamp(time.Now()), entropy)
	mu.Unlock()
	return prefix + "_" + strings.ToLower(id.String())
}

// Prefix returns the type prefix of id, or "" when id has none.
func Prefix(id string) string {
	i := strings.IndexByte(id, '_')
	if i <= 0 {
		return ""
	}
	return id[:i]
}

// Valid reports whether id looks like an id of the given prefix. It does not
// say the object exists.
func Valid(id, prefix string) bool {
	if !strings.HasPrefix(id, prefix+"_") {
		return false
	}
	_, err := ulid.ParseStrict(strings.ToUpper(id[len(prefix)+1:]))
	return err == nil
}
