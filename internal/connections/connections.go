// Package connections owns the lifecycle of OAuth2 connections: an oauth2
// credential's provider settings, its authorization (authorization code
// with PKCE through GET /oauth/callback, or client credentials), its tokens
// sealed in Postgres, their refresh (before expiry, on a 401, and at least
// daily; one refresher at a time per connection across every worker) and
// its status: pending_authorization -> active <-> degraded ->
// reauthorization_required | disabled. Transitions are audited and
// announced to the tenant's webhooks (credential.reauthorization_required,
// credential.expiring, credential.restored).
//
// The run state machine reads a connection's status (a step whose
// connection needs a person waits, internal/runs/credwait.go) and gets
// tokens through steps.TokenSource; it is told when a connection is
// authorized again through the Waker it registers.
package connections

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Events records tenant webhook events (webhook.Service).
type Events interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// Waker continues the runs whose steps wait for a connection, once it is
// authorized again (runs.Service).
type Waker interface {
	WakeCredentialWaits(ctx context.Context, tenantID, credentialID string) (int, error)
}

// Options configure a Service.
type Options struct {
	Client *ent.Client // the app role's client
	Vault  *vault.Vault
	// Events receives the credential.* webhook events; if nil, none are sent.
	Events Events
	// HTTP sends token requests: the egress client.
	HTTP *http.Client
	// RequireHTTPS refuses http provider and redirect URLs (production).
	RequireHTTPS bool
	// RedirectURL is the callback URL providers send the user back to
	// (SLUICE_OAUTH_REDIRECT_URL, default SLUICE_PUBLIC_URL +
	// /oauth/callback). If empty, beginAuthorization is refused.
	RedirectURL string
	Log         *slog.Logger
	// Now is the clock; if nil, the UTC wall clock.
	Now func() time.Time
	// SweepInterval is how often the refresh sweep runs; if zero, 30s.
	SweepInterval time.Duration
	// IdleRefresh is the longest a connection goes without a refresh; if
	// zero, 24h (idle refresh tokens get revoked by some providers).
	IdleRefresh time.Duration
	// StateTTL is how long an authorization's state is accepted; if zero,
	// 10 minutes.
	StateTTL time.Duration
}

// Service manages connections.
type Service struct {
	o     Options
	waker Waker
	cache tokenCache
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC() }
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 30 * time.Second
	}
	if o.IdleRefresh <= 0 {
		o.IdleRefresh = 24 * time.Hour
	}
	if o.StateTTL <= 0 {
		o.StateTTL = 10 * time.Minute
	}
	if o.HTTP == nil {
		o.HTTP = http.DefaultClient
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Service{o: o}
}

// SetWaker registers the run state machine (after both exist).
func (s *Service) SetWaker(w Waker) { s.waker = w }

// RequireHTTPS reports whether provider URLs must be https.
func (s *Service) RequireHTTPS() bool { return s.o.RequireHTTPS }

// tokenCache keeps access tokens in a worker's memory until they expire;
// past that the row is read again (another worker may have refreshed).
type tokenCache struct {
	mu      sync.Mutex
	entries map[string]cachedToken // by tenant + credential
}

type cachedToken struct {
	access  string
	expiry  time.Time
	version int
}

const maxCachedTokens = 10_000

func (tc *tokenCache) get(key string) (cachedToken, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	t, ok := tc.entries[key]
	return t, ok
}

func (tc *tokenCache) put(key string, t cachedToken) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.entries == nil || len(tc.entries) >= maxCachedTokens {
		tc.entries = map[string]cachedToken{}
	}
	if old, ok := tc.entries[key]; ok && old.version > t.version {
		return
	}
	tc.entries[key] = t
}

func (tc *tokenCache) drop(key string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	delete(tc.entries, key)
}
