package steps

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Reasons a call is deferred; stored in step.waiting events, never renamed.
const (
	// DeferRateLimit: a limit policy has no slot now, or the upstream
	// asked every caller to wait (a 429 or 503 with Retry-After or a reset
	// header: a cooldown of the scope).
	DeferRateLimit = "rate_limit"
)

// Deferral says an attempt must wait before its call goes: the run state
// machine reschedules the same attempt at Until, without spending a retry
// attempt (internal/runs/deferral.go). Executors return it wrapped in an
// *Error (Error.Deferral) so that code reading failure classes sees a
// transient failure, and errors.As finds it.
type Deferral struct {
	Reason string
	Until  time.Time
	// Why the wait, for the trace: "rate", "concurrency" or "cooldown".
	Cause string
	// Scope names the bucket that is full or cooling down.
	Scope string
	// StatusCode is the upstream's status when it asked for the wait (429
	// or 503), zero when the wait was decided before sending.
	StatusCode int
}

func (d *Deferral) Error() string {
	return fmt.Sprintf("%s (%s): wait until %s", d.Reason, d.Cause, d.Until.UTC().Format(time.RFC3339Nano))
}

// Unwrap makes errors.As find an *Error's Deferral.
func (e *Error) Unwrap() error {
	if e.Deferral == nil {
		return nil
	}
	return e.Deferral
}

// LimitScope is what the limiter keys a call by besides its host: set on
// the context by the run state machine (WithLimitScope).
type LimitScope struct {
	TenantID, EnvironmentID string
	// Credential is the step's credential name, empty when it names none.
	Credential string
	// AttemptID keys the attempt's reserved slots and concurrency holds.
	AttemptID string
	// WaitInProcess: the call waits for its slot here (within its
	// context's deadline) instead of returning a Deferral; for callers
	// that cannot reschedule (map items). An upstream's refusal still
	// comes back as an *Error with its Deferral, a transient failure.
	WaitInProcess bool
}

type limitScopeKey struct{}

// WithLimitScope tells the executor's limiter whose calls ctx makes.
func WithLimitScope(ctx context.Context, s LimitScope) context.Context {
	return context.WithValue(ctx, limitScopeKey{}, s)
}

func limitScopeOf(ctx context.Context) (LimitScope, bool) {
	s, ok := ctx.Value(limitScopeKey{}).(LimitScope)
	return s, ok && s.TenantID != ""
}

// LimitedCall is one call as the limiter sees it.
type LimitedCall struct {
	LimitScope
	// Host is the call's host, lower case, with its port when the URL
	// names one.
	Host string
	// Hold bounds how long the call may hold a concurrency slot (its
	// timeout and a margin): a killed worker's slot frees itself then.
	Hold time.Duration
}

// Limiter checks calls right before they are sent (internal/ratelimit).
type Limiter interface {
	// Acquire returns a release to call once the response is in, or a
	// *Deferral when the call must wait. Any other error lets the call go
	// (a limiter that cannot answer does not stop work).
	Acquire(ctx context.Context, c LimitedCall) (release func(), err error)
	// Observe sees every response; for a 429 or 503 asking callers to
	// wait it cools the scope down and returns the attempt's Deferral.
	Observe(ctx context.Context, c LimitedCall, status int, h http.Header) *Deferral
}

// WithLimiter makes every call of x pass l first. Calls made without a
// LimitScope on their context (no run) are not limited.
func (x *Executor) WithLimiter(l Limiter) *Executor {
	x.limiter = l
	return x
}

// holdMargin is added to a call's timeout for its concurrency hold.
const holdMargin = 30 * time.Second

// acquire is send's limiter check: a non-nil *Error (with its Deferral)
// when the call must wait; release is never nil.
func (x *Executor) acquire(ctx context.Context, req *http.Request, timeout time.Duration) (LimitedCall, func(), *Error) {
	scope, ok := limitScopeOf(ctx)
	if x.limiter == nil || !ok {
		return LimitedCall{}, func() {}, nil
	}
	c := LimitedCall{LimitScope: scope, Host: limitHost(req), Hold: timeout + holdMargin}
	release, err := x.limiter.Acquire(ctx, c)
	for scope.WaitInProcess {
		d, ok := err.(*Deferral)
		if !ok {
			break
		}
		t := time.NewTimer(time.Until(d.Until))
		select {
		case <-ctx.Done():
			t.Stop()
			return c, func() {}, deferralError(d)
		case <-t.C:
		}
		release, err = x.limiter.Acquire(ctx, c)
	}
	if d, ok := err.(*Deferral); ok {
		return c, func() {}, deferralError(d)
	}
	if release == nil {
		release = func() {}
	}
	return c, release, nil
}

// observe is send's look at a response: a non-nil *Error when the upstream
// asked the scope to cool down.
func (x *Executor) observe(ctx context.Context, c LimitedCall, ex *exchange) *Error {
	if x.limiter == nil || c.TenantID == "" {
		return nil
	}
	if ex.status != http.StatusTooManyRequests && ex.status != http.StatusServiceUnavailable {
		return nil
	}
	d := x.limiter.Observe(ctx, c, ex.status, ex.header)
	if d == nil {
		return nil
	}
	e := deferralError(d)
	e.StatusCode = ex.status
	return e
}

// limitHost is the request's host as policies name it: lower case, its
// port only when it is not the scheme's default.
func limitHost(req *http.Request) string {
	h := strings.ToLower(req.URL.Host)
	if p := req.URL.Port(); (p == "443" && req.URL.Scheme == "https") || (p == "80" && req.URL.Scheme == "http") {
		h = strings.TrimSuffix(h, ":"+p)
	}
	return h
}

func deferralError(d *Deferral) *Error {
	msg := fmt.Sprintf("rate limited (%s %s): waiting until %s", d.Cause, d.Scope, d.Until.UTC().Format(time.RFC3339Nano))
	if d.StatusCode != 0 {
		msg = fmt.Sprintf("status %d: cooldown of %s until %s", d.StatusCode, d.Scope, d.Until.UTC().Format(time.RFC3339Nano))
	}
	return &Error{Class: Transient, Message: msg, RetryAfter: time.Until(d.Until), StatusCode: d.StatusCode, Deferral: d, NotSent: d.StatusCode == 0}
}
