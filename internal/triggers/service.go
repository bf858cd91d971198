// Package triggers owns inbound webhook triggers: URLs (/hooks/<opaque
// id>) that start runs of a workflow in an environment from other systems'
// webhooks. It manages triggers (create, update, delete, rotate the secret,
// audited), verifies each request by the trigger's scheme, deduplicates,
// filters and maps events to run inputs with CEL, rate-limits per trigger,
// records every delivery, and starts the run through the run state machine
// (internal/runs) in the delivery's transaction.
package triggers

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/vault"
)

// PathPrefix is where the API serves triggers.
const PathPrefix = "/hooks/"

// MaxBodyBytes bounds a delivery's body; a larger one is refused with 413.
const MaxBodyBytes = 1 << 20

// Options configure the Service.
type Options struct {
	Client *ent.Client
	Vault  *vault.Vault
	// Runs starts the runs deliveries ask for.
	Runs *runs.Service
	Log  *slog.Logger
	// SecretOverlap is how long the previous secret keeps verifying after
	// a rotation. If zero, 24h.
	SecretOverlap time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Service manages triggers and receives their deliveries.
type Service struct {
	opts Options
}

// New returns a Service.
func New(o Options) *Service {
	if o.SecretOverlap <= 0 {
		o.SecretOverlap = 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Service{opts: o}
}

func (s *Service) now() time.Time { return s.opts.Now().UTC() }

// newHookID returns 256 random bits, base64url: the URL's last segment. It
// names nothing else (no tenant, no trigger id).
func newHookID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// validHookID reports whether s can be a hook id, so that garbage is
// answered 404 without a database round trip.
func validHookID(s string) bool {
	if len(s) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil
}

// Path returns a trigger's path.
func Path(t *ent.Trigger) string { return PathPrefix + t.HookID }
