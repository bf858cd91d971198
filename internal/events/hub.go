package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/backoff"
)

// Reasons a Hub ends a subscription; see Subscription.Err.
var (
	// ErrSlowSubscriber: the subscriber's buffer was full. It resumes from
	// the last seq it delivered.
	ErrSlowSubscriber = errors.New("events: slow subscriber")
	// ErrHubClosed: the process is shutting down.
	ErrHubClosed = errors.New("events: hub closed")
)

// HubOptions configure a Hub.
type HubOptions struct {
	// Buffer is how many notices wait for one subscriber before it counts
	// as slow and is dropped. If zero, 256.
	Buffer int
	// IdleCheck is how long the Redis connection may stay silent before the
	// Hub pings it to find a dead connection. If zero, 15s.
	IdleCheck time.Duration
	// Registerer receives the sluice_active_subscriptions gauge. If nil,
	// the gauge is not registered.
	Registerer prometheus.Registerer
	// Log; if nil, slog.Default().
	Log *slog.Logger
	// KeyRevoked, if set, receives every API key revocation published on
	// KeyRevokedChannel. It is called from the listening goroutine: it must
	// not block.
	KeyRevoked func(tenantID, keyID string)
	// Resynced, if set, is called after the Redis subscription was lost and
	// restored: messages published meanwhile (revocations too) are lost.
	Resynced func()
}

// Hub is responsible for the live subscribers of one API process: it
// listens to every tenant's channel on one Redis connection and hands each
// notice to the local subscribers of that tenant (or of one run). It never
// waits for a subscriber: one whose buffer is full is dropped.
//
// Lifecycle: NewHub, Start (returns once Redis confirmed the subscription),
// Close (ends every subscription with ErrHubClosed, then stops listening).
type Hub struct {
	rdb       redis.UniversalClient
	log       *slog.Logger
	buffer    int
	idleCheck time.Duration
	active    prometheus.Gauge
	revoked   func(tenantID, keyID string)
	resynced  func()

	mu      sync.Mutex
	subs    map[string]map[*Subscription]struct{} // by subscriptionKey
	tenants map[string]int                        // subscriptions per tenant
	closed  bool

	closing     context.Context // cancelled when Close begins
	stopClosing context.CancelFunc

	cancel context.CancelFunc
	ps     *redis.PubSub
	done   chan struct{}
}

// NewHub returns a Hub listening through rdb once started.
func NewHub(rdb redis.UniversalClient, o HubOptions) (*Hub, error) {
	if o.Buffer <= 0 {
		o.Buffer = 256
	}
	if o.IdleCheck <= 0 {
		o.IdleCheck = 15 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	h := &Hub{
		rdb: rdb, log: o.Log, buffer: o.Buffer, idleCheck: o.IdleCheck,
		revoked: o.KeyRevoked, resynced: o.Resynced,
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_active_subscriptions",
			Help: "Live GraphQL subscriptions served by this process.",
		}),
		subs:    map[string]map[*Subscription]struct{}{},
		tenants: map[string]int{},
		done:    make(chan struct{}),
	}
	h.closing, h.stopClosing = context.WithCancel(context.Background())
	if o.Registerer != nil {
		if err := o.Registerer.Register(h.active); err != nil {
			return nil, fmt.Errorf("register subscription gauge: %w", err)
		}
	}
	return h, nil
}

// Start subscribes to every tenant's channel and returns once Redis has
// confirmed it, so nothing published afterwards is missed. The Hub listens
// until ctx ends or Close is called.
func (h *Hub) Start(ctx context.Context) error {
	ps, err := h.subscribeAll(ctx)
	if err != nil {
		return err
	}
	ctx, h.cancel = context.WithCancel(ctx)
	h.ps = ps
	go h.listen(ctx, ps)
	return nil
}

// subscribeAll subscribes to the revocation channel (when KeyRevoked is
// set), then to every tenant's run channel, and returns once Redis has
// confirmed both.
func (h *Hub) subscribeAll(ctx context.Context) (*redis.PubSub, error) {
	if h.revoked == nil {
		ps := h.rdb.PSubscribe(ctx, channelPrefix+"*")
		if _, err := ps.Receive(ctx); err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("subscribe to run changes: %w", err)
		}
		return ps, nil
	}
	ps := h.rdb.Subscribe(ctx, KeyRevokedChannel)
	if _, err := ps.Receive(ctx); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to API key revocations: %w", err)
	}
	if err := ps.PSubscribe(ctx, channelPrefix+"*"); err != nil {
		_ = ps.Close()
		return nil, fmt.Errorf("subscribe to run changes: %w", err)
	}
	for {
		// A revocation published meanwhile concerns no stream yet: skip it.
		msg, err := ps.Receive(ctx)
		if err != nil {
			_ = ps.Close()
			return nil, fmt.Errorf("subscribe to run changes: %w", err)
		}
		if _, ok := msg.(*redis.Subscription); ok {
			return ps, nil
		}
	}
}

// Close ends every subscription with ErrHubClosed and stops listening.
func (h *Hub) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		h.stopClosing()
		for _, set := range h.subs {
			for s := range set {
				h.dropLocked(s, ErrHubClosed)
			}
		}
	}
	h.mu.Unlock()
	if h.cancel != nil {
		h.cancel()
		// A blocked read does not watch ctx: closing the connection ends it.
		_ = h.ps.Close()
		<-h.done
	}
}

// Closing returns a context cancelled when Close begins, so long-lived
// connections can end.
func (h *Hub) Closing() context.Context { return h.closing }

// SubscribeRun returns a subscription to the changes of one run.
func (h *Hub) SubscribeRun(tenantID, runID string) *Subscription {
	return h.subscribe(subscriptionKey(tenantID, runID))
}

// SubscribeTenant returns a subscription to the changes of every run of a
// tenant.
func (h *Hub) SubscribeTenant(tenantID string) *Subscription {
	return h.subscribe(subscriptionKey(tenantID, ""))
}

func subscriptionKey(tenantID, runID string) string { return tenantID + "\x00" + runID }

func tenantOf(key string) string {
	tenantID, _, _ := strings.Cut(key, "\x00")
	return tenantID
}

// listened reports whether any local subscriber wants tenantID's notices:
// the others are not even decoded.
func (h *Hub) listened(tenantID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tenants[tenantID] > 0
}

func (h *Hub) subscribe(key string) *Subscription {
	s := &Subscription{hub: h, key: key, c: make(chan *Notice, h.buffer)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.err = ErrHubClosed
		s.done = true
		close(s.c)
		return s
	}
	set := h.subs[key]
	if set == nil {
		set = map[*Subscription]struct{}{}
		h.subs[key] = set
	}
	set[s] = struct{}{}
	h.tenants[tenantOf(key)]++
	h.active.Inc()
	return s
}

// dropLocked removes s and closes its channel with reason err (nil when the
// subscriber itself left). h.mu is held.
func (h *Hub) dropLocked(s *Subscription, err error) {
	if s.done {
		return
	}
	s.done, s.err = true, err
	if set := h.subs[s.key]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, s.key)
		}
	}
	close(s.c)
	if t := tenantOf(s.key); h.tenants[t] > 1 {
		h.tenants[t]--
	} else {
		delete(h.tenants, t)
	}
	h.active.Dec()
}

// reconnectBackoff spaces the waits after errors on the pattern
// subscription: 50ms, doubling, at most 2s apart. Without jitter: one
// subscription per process, nothing to spread.
var reconnectBackoff = backoff.Exponential{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Coefficient: 2}

// listen reads the pattern subscription until ctx ends. go-redis reconnects
// and re-subscribes by itself after an error; messages published meanwhile
// are lost, so after a re-subscription every subscriber is told to resync.
func (h *Hub) listen(ctx context.Context, ps *redis.PubSub) {
	defer close(h.done)
	defer ps.Close()
	lost := false
	failures := 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, h.idleCheck)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Silence: make sure the connection is alive (a failed ping
				// reconnects it).
				_ = ps.Ping(ctx)
				continue
			}
			if !lost {
				h.log.Warn("run change subscription lost; reconnecting", "err", err)
			}
			lost = true
			failures++
			select {
			case <-ctx.Done():
				return
			case <-time.After(reconnectBackoff.Ceiling(failures)):
			}
			continue
		}
		failures = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if lost {
				lost = false
				h.log.Info("run change subscription restored; subscribers resync from the log")
				h.resync()
				if h.resynced != nil {
					h.resynced()
				}
			}
		case *redis.Message:
			if m.Channel == KeyRevokedChannel {
				var k KeyRevoked
				if err := json.Unmarshal([]byte(m.Payload), &k); err != nil || k.KeyID == "" {
					h.log.Warn("undecodable API key revocation", "err", err)
					continue
				}
				if h.revoked != nil {
					h.revoked(k.TenantID, k.KeyID)
				}
				continue
			}
			tenantID, ok := strings.CutPrefix(m.Channel, channelPrefix)
			if !ok || tenantID == "" || !h.listened(tenantID) {
				continue
			}
			n := &Notice{}
			if err := json.Unmarshal([]byte(m.Payload), n); err != nil || n.RunID == "" {
				h.log.Warn("undecodable run notice", "channel", m.Channel, "err", err)
				continue
			}
			n.TenantID = tenantID
			h.dispatch(n)
		}
	}
}

// dispatch hands n to the subscribers of its run and of its tenant.
func (h *Hub) dispatch(n *Notice) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, key := range [2]string{subscriptionKey(n.TenantID, n.RunID), subscriptionKey(n.TenantID, "")} {
		for s := range h.subs[key] {
			h.offerLocked(s, n)
		}
	}
}

// resync tells every subscriber that notices may have been lost.
func (h *Hub) resync() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.subs {
		for s := range set {
			tenantID, runID, _ := strings.Cut(s.key, "\x00")
			h.offerLocked(s, &Notice{TenantID: tenantID, RunID: runID, Resync: true})
		}
	}
}

func (h *Hub) offerLocked(s *Subscription, n *Notice) {
	select {
	case s.c <- n:
	default:
		h.dropLocked(s, ErrSlowSubscriber)
	}
}

// Subscription is one subscriber's queue of notices.
type Subscription struct {
	hub  *Hub
	key  string
	c    chan *Notice
	done bool  // guarded by hub.mu
	err  error // guarded by hub.mu
}

// C delivers notices in the order this process received them; it is closed
// when the subscription ends (see Err). Notices are shared between
// subscribers: never modify one.
func (s *Subscription) C() <-chan *Notice { return s.c }

// Err says why the hub closed C: ErrSlowSubscriber or ErrHubClosed; nil
// while open or after Close.
func (s *Subscription) Err() error {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	return s.err
}

// Close ends the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	s.hub.dropLocked(s, nil)
}
