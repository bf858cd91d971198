package steps

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/retryafter"
)

// Class is a failure class. The run state machine retries Transient failures per the
// step's retry policy and fails the step at once for every other class.
type Class string

// Failure classes; the strings are stored and shown, never renamed.
const (
	Transient   Class = "transient"
	Permanent   Class = "permanent"
	SchemaDrift Class = "schema_drift"
	Budget      Class = "budget"
	Cancelled   Class = "cancelled"
	// Uncertain: an at_most_once call may have reached its receiver but
	// its outcome is unknown (the worker was lost, or the call failed
	// after it may have been sent), so it is not sent again.
	Uncertain Class = "uncertain"
	// Limit: an expression or a step output passed a cap (values, bytes,
	// evaluation time; see internal/definition/limits.go).
	Limit Class = "limit"
	// Crashed: the step's worker died (was taken over) too many times.
	Crashed Class = "crashed"
	// Timeout: a wait step's deadline passed before its event came
	// (onTimeout fail).
	Timeout Class = "timeout"
)

// Error is a classified step failure. Message is safe to show to the tenant
// and to store: secrets of the step's credential are redacted from it.
type Error struct {
	Class   Class
	Message string
	// RetryAfter is the delay the server asked for (Retry-After), if any;
	// the run state machine waits at least this long before the next attempt.
	RetryAfter time.Duration
	// StatusCode is the HTTP status of the response that failed the step,
	// or zero when there was none.
	StatusCode int
	// NotSent says the request certainly never reached the receiver: no
	// connection was made (DNS, connect or TLS failure, egress refusal)
	// or the send was not recorded. Set only for calls made with
	// Request.BeforeSend (at_most_once steps), whose other failures may
	// have been sent.
	NotSent bool
	// Deferral, when set, says the attempt is to wait for a rate limit's
	// slot or an upstream's cooldown rather than fail (deferral.go).
	Deferral *Deferral
}

func (e *Error) Error() string { return string(e.Class) + ": " + e.Message }

func newError(class Class, format string, args ...any) *Error {
	return &Error{Class: class, Message: fmt.Sprintf(format, args...)}
}

// Classify returns err as an *Error. Errors that already are one are
// returned as they are; context cancellation is Cancelled; timeouts and
// network failures are Transient; a destination refused by the egress
// policy, TLS certificate failures and anything unknown are Permanent. It
// is nil-safe. The message is err's text, so callers holding secrets must
// redact it.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	class := Permanent
	switch {
	case errors.Is(err, context.Canceled):
		class = Cancelled
	case errors.Is(err, egress.ErrDenied), isCertificateError(err):
		class = Permanent
	case errors.Is(err, context.DeadlineExceeded), isNetworkError(err):
		class = Transient
	}
	return &Error{Class: class, Message: err.Error()}
}

func isCertificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) ||
		errors.As(err, &hostname) || errors.As(err, &invalid)
}

func isNetworkError(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		// A name that does not exist will not exist on the next attempt
		// either; a resolver failure might.
		return !dns.IsNotFound
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE)
}

// statusError classifies a response status that is not a success. detail
// is appended to the message (already redacted).
func statusError(status int, h http.Header, now time.Time, detail string) *Error {
	e := &Error{Class: Permanent, StatusCode: status, Message: fmt.Sprintf("status %d", status)}
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly,
		status == http.StatusTooManyRequests, status >= 500:
		e.Class = Transient
		e.RetryAfter = retryafter.FromHeader(h, now)
	case status >= 300 && status < 400:
		e.Message += ": redirects are not followed"
	}
	if detail != "" {
		e.Message += ": " + detail
	}
	return e
}
