package auth

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/apikey"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Why a lease ends. Both are UNAUTHENTICATED: the client must authenticate
// again.
var (
	errCredentialExpired = errs.E(errs.Unauthenticated, "the credential expired: authenticate again")
	errKeyRevoked        = errs.E(errs.Unauthenticated, "the API key was revoked or has expired")
)

// A Lease is the life of the credential behind one long-lived connection (a
// websocket, an SSE stream). A request is authenticated once, but a stream
// lasts hours: the lease ends when the credential expires or, for an API
// key, when the key is revoked, and the stream must end with it.
type Lease struct {
	leases *Leases
	keyID  string
	ctx    context.Context // cancelled with the reason when the lease ends
	end    context.CancelCauseFunc
	timer  *time.Timer
}

// Done is closed when the lease ends. A nil lease never ends.
func (l *Lease) Done() <-chan struct{} {
	if l == nil {
		return nil
	}
	return l.ctx.Done()
}

// Err is why the lease ended (an UNAUTHENTICATED error), nil while it lasts.
func (l *Lease) Err() error {
	if l == nil || l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// AfterEnd runs f in its own goroutine when the lease ends; stop cancels
// that.
func (l *Lease) AfterEnd(f func()) (stop func() bool) {
	return context.AfterFunc(l.ctx, f)
}

// Close releases the lease when its connection ends. It does not end the
// lease: Done stays open.
func (l *Lease) Close() {
	if l == nil {
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.leases.forget(l)
}

type leaseKey struct{}

// WithLease returns ctx carrying l.
func WithLease(ctx context.Context, l *Lease) context.Context {
	return context.WithValue(ctx, leaseKey{}, l)
}

// LeaseFrom returns the lease in ctx, or nil (a lease that never ends).
func LeaseFrom(ctx context.Context) *Lease {
	l, _ := ctx.Value(leaseKey{}).(*Lease)
	return l
}

// LeasesOptions configure Leases.
type LeasesOptions struct {
	// Recheck is how often the API keys of open leases are read again, in
	// case a revocation message was lost. If zero, 30 seconds.
	Recheck time.Duration
	// Log; if nil, slog.Default().
	Log *slog.Logger
}

// Leases is responsible for ending the leases of one API process: each at
// its credential's expiry (a timer), and those of an API key when the key
// is revoked. Revocations arrive as messages from other processes
// (Revoked); Run reads the keys of open leases again periodically and
// whenever messages may have been lost (Recheck), so a lost message delays
// the end by one period at most.
//
// Lifecycle: NewLeases, then Run until the process stops. A nil *Leases
// opens leases that end only at expiry.
type Leases struct {
	client  *ent.Client
	log     *slog.Logger
	every   time.Duration
	now     func() time.Time
	recheck chan struct{}

	mu   sync.Mutex
	keys map[string]map[*Lease]string // API key id -> open leases -> tenant id
}

// NewLeases reads API keys through client (the app role's pool).
func NewLeases(client *ent.Client, o LeasesOptions) *Leases {
	if o.Recheck <= 0 {
		o.Recheck = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Leases{client: client, log: o.Log, every: o.Recheck, now: time.Now,
		recheck: make(chan struct{}, 1), keys: map[string]map[*Lease]string{}}
}

// Open starts the lease of v's credential. Close it when the connection
// ends.
func (ls *Leases) Open(v *viewer.Viewer) *Lease {
	l := &Lease{leases: ls}
	l.ctx, l.end = context.WithCancelCause(context.Background())
	if v == nil {
		l.end(errCredentialExpired)
		return l
	}
	if !v.ExpiresAt.IsZero() {
		if d := time.Until(v.ExpiresAt); d > 0 {
			l.timer = time.AfterFunc(d, func() { l.end(errCredentialExpired) })
		} else {
			l.end(errCredentialExpired)
		}
	}
	if ls != nil && v.APIKeyID != "" {
		l.keyID = v.APIKeyID
		ls.mu.Lock()
		set := ls.keys[v.APIKeyID]
		if set == nil {
			set = map[*Lease]string{}
			ls.keys[v.APIKeyID] = set
		}
		set[l] = v.TenantID
		ls.mu.Unlock()
	}
	return l
}

func (ls *Leases) forget(l *Lease) {
	if ls == nil || l.keyID == "" {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if set := ls.keys[l.keyID]; set != nil {
		delete(set, l)
		if len(set) == 0 {
			delete(ls.keys, l.keyID)
		}
	}
}

// Revoked ends the leases of API key keyID of tenantID. It is called for
// every revocation message, whichever process revoked the key.
func (ls *Leases) Revoked(tenantID, keyID string) {
	if ls == nil {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	for l, tid := range ls.keys[keyID] {
		if tid == tenantID {
			l.end(errKeyRevoked)
		}
	}
}

// Recheck asks Run to read the keys of open leases now: revocation messages
// may have been lost (the subscription reconnected).
func (ls *Leases) Recheck() {
	if ls == nil {
		return
	}
	select {
	case ls.recheck <- struct{}{}:
	default:
	}
}

// Run reads the keys of open leases every period and on Recheck, until ctx
// ends.
func (ls *Leases) Run(ctx context.Context) {
	t := time.NewTicker(ls.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-ls.recheck:
		}
		if err := ls.check(ctx); err != nil && ctx.Err() == nil {
			ls.log.Warn("re-check API keys of open streams", "err", err)
		}
	}
}

// check ends the leases of keys that are revoked, expired or gone: one
// tenant transaction per tenant with open API-key leases.
func (ls *Leases) check(ctx context.Context) error {
	byTenant := map[string][]string{}
	ls.mu.Lock()
	for keyID, set := range ls.keys {
		for _, tid := range set {
			byTenant[tid] = append(byTenant[tid], keyID)
			break // a key belongs to one tenant
		}
	}
	ls.mu.Unlock()
	var firstErr error
	for tid, keyIDs := range byTenant {
		var valid map[string]bool
		err := store.InTenant(viewer.SystemContext(ctx, tid), ls.client, func(ctx context.Context) error {
			keys, err := ent.FromContext(ctx).APIKey.Query().Where(apikey.IDIn(keyIDs...)).All(ctx)
			if err != nil {
				return err
			}
			now := ls.now()
			valid = make(map[string]bool, len(keys))
			for _, k := range keys {
				valid[k.ID] = k.RevokedAt == nil && (k.ExpiresAt == nil || k.ExpiresAt.After(now))
			}
			return nil
		})
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("tenant %s: %w", tid, err)
			}
			continue
		}
		for _, keyID := range keyIDs {
			if !valid[keyID] {
				ls.Revoked(tid, keyID)
			}
		}
	}
	return firstErr
}
