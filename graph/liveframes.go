package graph

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/viewer"
)

// FrameCacheOptions configure a FrameCache.
type FrameCacheOptions struct {
	// TTL is how long a rendered value is reused. If zero, 5s: long enough
	// for every subscriber of a run to take an event off its queue, short
	// enough that a subscriber resuming later renders afresh.
	TTL time.Duration
	// MaxEntries bounds the values kept. If zero, 4096.
	MaxEntries int
	// MaxBytes bounds the bytes of the values kept. If zero, 8 MiB.
	MaxBytes int
	// Renders, if set, counts the values handed out by result: "miss" (the
	// selection was executed) or "hit" (bytes another subscriber rendered).
	Renders *prometheus.CounterVec
	// Now is the clock; if nil, time.Now.
	Now func() time.Time
}

// FrameCache is responsible for rendering a run event once per distinct
// subscription selection and access in an API process: the first
// subscriber to need (event, selection, access) executes the selection and
// the others get the same bytes. Concurrent subscribers of one key wait for
// the one rendering it. Only values without errors or extensions are kept;
// a subscriber that finds a failed render renders for itself.
type FrameCache struct {
	ttl        time.Duration
	maxEntries int
	maxBytes   int
	now        func() time.Time
	hit, miss  prometheus.Counter

	mu      sync.Mutex
	entries map[frameKey]*frameEntry
	order   []frameSlot // oldest first
	bytes   int
}

// frameKey names one rendered value: the event and everything the value
// can depend on besides it (selectionDigest).
type frameKey struct {
	eventID   string
	selection [sha256.Size]byte
}

type frameEntry struct {
	done    chan struct{} // closed once data is set (or the render failed)
	data    json.RawMessage
	at      time.Time
	evicted bool // guarded by FrameCache.mu
}

type frameSlot struct {
	key   frameKey
	entry *frameEntry
}

// NewFrameCache returns an empty cache.
func NewFrameCache(o FrameCacheOptions) *FrameCache {
	if o.TTL <= 0 {
		o.TTL = 5 * time.Second
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4096
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 8 << 20
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &FrameCache{ttl: o.TTL, maxEntries: o.MaxEntries, maxBytes: o.MaxBytes, now: o.Now, entries: map[frameKey]*frameEntry{}}
	if o.Renders != nil {
		c.hit, c.miss = o.Renders.WithLabelValues("hit"), o.Renders.WithLabelValues("miss")
	}
	return c
}

// NewLiveRendersCounter returns the sluice_live_renders_total counter a
// FrameCache reports to.
func NewLiveRendersCounter() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_live_renders_total",
		Help: "runEvents values sent to subscribers: miss when the selection was executed for it, hit when it reused the bytes rendered for another subscriber with the same selection and access.",
	}, []string{"result"})
}

// value returns the value of key: the cached one, or render's. render runs
// at most once per call; a nil response (the subscriber's stream ended) is
// returned as is.
func (c *FrameCache) value(ctx context.Context, key frameKey, render func() *graphql.Response) *graphql.Response {
	c.mu.Lock()
	now := c.now()
	e := c.entries[key]
	if e != nil && now.Sub(e.at) > c.ttl {
		c.removeLocked(key, e)
		e = nil
	}
	if e == nil {
		e = &frameEntry{done: make(chan struct{}), at: now}
		c.entries[key] = e
		c.order = append(c.order, frameSlot{key, e})
		c.evictLocked(now)
		c.mu.Unlock()
		return c.fill(key, e, render)
	}
	c.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
		return nil
	}
	if e.data == nil {
		// The render it waited for failed or ended: its own may not.
		c.count(c.miss)
		return render()
	}
	c.count(c.hit)
	return &graphql.Response{Data: e.data}
}

// fill renders e's value and keeps it when it is one to share.
func (c *FrameCache) fill(key frameKey, e *frameEntry, render func() *graphql.Response) *graphql.Response {
	var resp *graphql.Response
	defer func() {
		c.mu.Lock()
		if resp != nil && resp.Data != nil && len(resp.Errors) == 0 && len(resp.Extensions) == 0 && !e.evicted {
			// A copy: gqlgen reuses the buffer behind Data for the
			// operation's next value.
			e.data = slices.Clone(resp.Data)
			c.bytes += len(e.data)
			c.evictLocked(c.now())
		} else {
			c.removeLocked(key, e)
		}
		c.mu.Unlock()
		close(e.done)
	}()
	c.count(c.miss)
	resp = render()
	return resp
}

// evictLocked drops expired entries and the oldest while over a bound.
func (c *FrameCache) evictLocked(now time.Time) {
	for len(c.order) > 0 {
		s := c.order[0]
		if !s.entry.evicted && now.Sub(s.entry.at) <= c.ttl && len(c.entries) <= c.maxEntries && c.bytes <= c.maxBytes {
			return
		}
		c.order[0] = frameSlot{}
		c.order = c.order[1:]
		c.removeLocked(s.key, s.entry)
	}
}

// removeLocked forgets e (its waiters keep their pointer).
func (c *FrameCache) removeLocked(key frameKey, e *frameEntry) {
	if e.evicted {
		return
	}
	e.evicted = true
	c.bytes -= len(e.data)
	if c.entries[key] == e {
		delete(c.entries, key)
	}
}

func (c *FrameCache) count(m prometheus.Counter) {
	if m != nil {
		m.Inc()
	}
}

// selectionDigest hashes everything a runEvents value can depend on besides
// its event: the operation (query text, operation name, variables) and the
// viewer's access (tenant, environment scope, roles, system). Selections
// whose values read the database (the run edge) are never cached, so the
// value of a cached selection depends on the event's fields and these.
// ok is false when the variables cannot be encoded.
func selectionDigest(ctx context.Context) (d [sha256.Size]byte, ok bool) {
	if !graphql.HasOperationContext(ctx) {
		return d, false
	}
	oc := graphql.GetOperationContext(ctx)
	v := viewer.FromContext(ctx)
	if v == nil {
		return d, false
	}
	vars, err := json.Marshal(oc.Variables) // map keys sorted: stable
	if err != nil {
		return d, false
	}
	h := sha256.New()
	part := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	part(oc.RawQuery)
	part(oc.OperationName)
	part(string(vars))
	part(v.TenantID)
	part(v.EnvironmentID)
	part(strconv.FormatBool(v.System))
	roles := slices.Clone(v.Roles)
	slices.Sort(roles)
	part(strconv.Itoa(len(roles)))
	for _, r := range roles {
		part(r)
	}
	h.Sum(d[:0])
	return d, true
}
