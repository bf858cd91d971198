package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/secrets"
)

// CacheState says where an http step's response came from, as the trace
// records it on the call.
type CacheState string

const (
	CacheHit   CacheState = "hit"   // fresh from the cache; nothing was sent
	CacheStale CacheState = "stale" // the call failed transiently; an expired response stood in
	CacheMiss  CacheState = "miss"  // sent upstream (and stored when it succeeded)
)

// CachedResponse is a response as the cache keeps it.
type CachedResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// CacheRequest names what is looked up: the parts of the request the key
// is made of besides tenant and credential (which the cache binds), and
// the step's policy.
type CacheRequest struct {
	Method string
	URL    string
	// BodySHA256 is the hex SHA-256 of the request body and of the
	// headers the step itself sets (never the credential's).
	BodySHA256 string
	Policy     definition.CachePolicy
	// Lease bounds how long one caller may hold the key while it calls
	// upstream (the step's timeout and a margin): after it, a waiting
	// caller takes over, so a dead worker blocks nobody for longer.
	Lease time.Duration
}

// CacheFill makes the call for the cache. It returns the response to store
// (a 2xx), or transient when the call failed in a way a stale response may
// stand in for (network, timeout, 5xx, 429).
type CacheFill func(ctx context.Context) (store *CachedResponse, transient bool)

// ResponseCache serves http steps with a cache policy (internal/respcache).
// Do returns a fresh entry (CacheHit) without calling fill; otherwise it
// calls fill at most once, one caller at a time per key, and returns a
// stale entry (CacheStale) when fill failed transiently within the
// policy's staleIfError, else CacheMiss with a nil response (the caller
// uses what fill got). An error means the cache could not be used; fill
// may or may not have been called.
type ResponseCache interface {
	Do(ctx context.Context, r CacheRequest, fill CacheFill) (*CachedResponse, CacheState, error)
}

// sendCached is send through the step's response cache when it has a
// cache policy and the run gave a cache; otherwise it is send.
func (x *Executor) sendCached(ctx context.Context, req Request, timeout time.Duration, red *secrets.Redactor, call *Call, hreq *http.Request, body []byte) (*exchange, *Error) {
	p := req.Step.Cache
	if req.Cache == nil || p == nil || req.Step.SideEffect || req.BeforeSend != nil {
		return x.send(ctx, timeout, red, call, hreq, body, req.BeforeSend)
	}
	var ex *exchange
	var e *Error
	called := false
	fill := func(ctx context.Context) (*CachedResponse, bool) {
		called = true
		ex, e = x.send(ctx, timeout, red, call, hreq, body, nil)
		switch {
		case e != nil:
			return nil, e.Class == Transient
		case ex.status >= 200 && ex.status < 300:
			return &CachedResponse{Status: ex.status, Header: ex.header, Body: ex.body}, false
		}
		return nil, ex.status >= 500 || ex.status == http.StatusTooManyRequests
	}
	cr := CacheRequest{Method: hreq.Method, URL: hreq.URL.String(), BodySHA256: requestDigest(req.Step, hreq, body), Policy: *p, Lease: timeout + 5*time.Second}
	got, state, err := req.Cache.Do(ctx, cr, fill)
	switch {
	case err != nil && !called:
		// The cache is unavailable: the step still runs, uncached.
		return x.send(ctx, timeout, red, call, hreq, body, nil)
	case err != nil || got == nil:
		call.Cache = string(CacheMiss)
		return ex, e
	}
	// Served from the cache: no upstream duration, nothing spent upstream.
	*call = Call{Kind: "http", Method: hreq.Method, URL: displayURL(hreq.URL, red), Host: red.String(hreq.URL.Host),
		Path: red.String(hreq.URL.Path), StatusCode: got.Status, StartedAt: x.now().UTC(), Cache: string(state),
		RequestBody: x.recordBody(body, red), ResponseBody: x.recordBody(got.Body, red)}
	return &exchange{status: got.Status, header: got.Header, body: got.Body}, nil
}

// requestDigest hashes the request body and the headers the step sets
// (their rendered values), so two runs share an entry only when they
// would send the same thing.
func requestDigest(s *definition.Step, hreq *http.Request, body []byte) string {
	h := sha256.New()
	h.Write(body)
	names := make([]string, 0, len(s.Request.Headers))
	for k := range s.Request.Headers {
		names = append(names, strings.ToLower(k))
	}
	sort.Strings(names)
	for _, k := range names {
		h.Write([]byte{0})
		h.Write([]byte(k + ":" + hreq.Header.Get(k)))
	}
	return hex.EncodeToString(h.Sum(nil))
}
