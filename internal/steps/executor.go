// Package steps owns the executors for the step types that call out: http
// and llm. An executor renders the step's templates against the run's
// expression environment, injects the step's credential, makes the call
// through the egress client, classifies the outcome into a failure class
// and records each call, redacted, for the trace.
package steps

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/secrets"
)

// Request is one attempt of a step, as the run state machine hands it to an executor.
type Request struct {
	RunID   string
	StepID  string
	Attempt int
	Step    *definition.Step
	Env     definition.Env
	// Credential is the step's decrypted credential, nil if it names none.
	Credential *Credential
	// IdempotencyKey is sent as the Idempotency-Key header: by llm steps
	// always, by http steps on methods other than GET and HEAD and on any
	// side-effecting step. If empty, idempotency.Key(RunID, StepID), the
	// key the run state machine gives, is used.
	IdempotencyKey string
	// BeforeSend, when set (at_most_once steps), is called just before the
	// step's call is sent and must durably record that it may be sent; if
	// it fails, nothing is sent and the attempt fails with NotSent. The
	// call is then made so that nothing resends it (no transport replay),
	// and its failures say whether it certainly was not sent (NotSent).
	BeforeSend func(ctx context.Context) error
	// Fallbacks are an llm step's fallback models, in the step's order,
	// with their credentials resolved like Credential.
	Fallbacks []Fallback
	// BeforeModelCall, when set, is called before each model call of an
	// llm step, once its request is built; an error (a Budget *Error to
	// refuse the call) ends the attempt with it, and nothing is sent.
	BeforeModelCall func(ctx context.Context, next PlannedCall) error
	// Cache, when set, serves an http step that has a cache policy
	// (cache.go); the run state machine binds it to the run's tenant and
	// the step's credential.
	Cache ResponseCache
}

// Call is one outbound call, as recorded in the trace. Every string in it
// is redacted of the credential's secrets.
type Call struct {
	Kind       string    `json:"kind"` // "http" | "llm"
	Method     string    `json:"method"`
	URL        string    `json:"url"` // without user info; sensitive-looking query values replaced
	Host       string    `json:"host"`
	Path       string    `json:"path"`
	StatusCode int       `json:"statusCode,omitempty"`
	DurationMs int64     `json:"durationMs"`
	StartedAt  time.Time `json:"startedAt"`
	// Model calls only. InputTokens counts every input token, including
	// CachedInputTokens (those served from the provider's prompt cache),
	// whichever provider's convention the response used.
	Provider          string `json:"provider,omitempty"`
	Model             string `json:"model,omitempty"`
	InputTokens       int64  `json:"inputTokens,omitempty"`
	OutputTokens      int64  `json:"outputTokens,omitempty"`
	CachedInputTokens int64  `json:"cachedInputTokens,omitempty"`
	// Bodies are capped at maxRecordedBody bytes.
	RequestBody  string `json:"requestBody,omitempty"`
	ResponseBody string `json:"responseBody,omitempty"`
	Error        string `json:"error,omitempty"`
	// Cache is hit, stale or miss for an http step with a cache policy.
	Cache string `json:"cache,omitempty"`
}

// Result is what a step attempt produced. Output is nil when the attempt
// failed; Calls are recorded either way.
type Result struct {
	Output map[string]any `json:"output,omitempty"`
	Calls  []Call         `json:"calls"`
}

// Executor runs http and llm steps. It is safe for concurrent use.
type Executor struct {
	client    *http.Client
	tokens    tokenCache
	now       func() time.Time
	sensitive map[string]bool // lower-case JSON field names scrubbed from recorded bodies
	limiter   Limiter         // if nil, calls are not limited (WithLimiter)
}

// DefaultSensitiveFields are JSON field names whose values recorded bodies
// never keep, whatever the configuration adds.
var DefaultSensitiveFields = []string{
	"password", "passwd", "secret", "client_secret", "clientsecret", "token", "access_token", "accesstoken",
	"refresh_token", "refreshtoken", "id_token", "api_key", "apikey", "authorization", "cookie", "set-cookie",
	"ssn", "card_number", "cardnumber", "cvv", "cvc", "iban", "private_key", "privatekey",
}

// WithSensitiveFields adds field names (case-insensitive) whose values are
// scrubbed from recorded request and response bodies (SLUICE_REDACT_FIELDS).
func (x *Executor) WithSensitiveFields(names []string) *Executor {
	for _, n := range names {
		x.sensitive[strings.ToLower(strings.TrimSpace(n))] = true
	}
	return x
}

// NewExecutor returns an executor making every call through client, which
// must be an egress client (egress.NewClient). If client is nil, one with
// the default egress policy is used.
func NewExecutor(client *http.Client) *Executor {
	if client == nil {
		client = egress.NewClient(egress.Config{})
	}
	x := &Executor{client: client, now: time.Now, sensitive: map[string]bool{}}
	return x.WithSensitiveFields(DefaultSensitiveFields)
}

const (
	maxResponseBytes = 1 << 20
	maxRecordedBody  = 8 << 10
	truncatedMarker  = "…[truncated]"
	// maxErrorDetail bounds the response excerpt quoted in an error message.
	maxErrorDetail = 300
	userAgent      = "Sluice"
)

// stepTimeout is the step's timeout, or def when the step sets none.
func stepTimeout(s *definition.Step, def time.Duration) time.Duration {
	if s.Timeout.Duration > 0 {
		return s.Timeout.Duration
	}
	return def
}

// idempotencyKey is the key the run state machine gave, or the one it would give
// (run, step), so it is stable across retries and resumes.
func idempotencyKey(req Request) string {
	if req.IdempotencyKey != "" {
		return req.IdempotencyKey
	}
	if req.RunID == "" && req.StepID == "" {
		return ""
	}
	return idempotency.Key(req.RunID, req.StepID)
}

// exchange is a completed call: a response whose body was read in full.
type exchange struct {
	status int
	header http.Header
	body   []byte
}

// send makes one call and records it in call. Transport failures and
// oversized responses come back as classified, redacted errors; any HTTP
// status is a successful exchange for the caller to judge.
func (x *Executor) send(ctx context.Context, timeout time.Duration, red *secrets.Redactor, call *Call, req *http.Request, body []byte, beforeSend func(context.Context) error) (*exchange, *Error) {
	call.Method = req.Method
	call.URL = displayURL(req.URL, red)
	call.Host = red.String(req.URL.Host)
	call.Path = red.String(req.URL.Path)
	call.StartedAt = x.now().UTC()
	call.RequestBody = x.recordBody(body, red)
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}

	start := time.Now()
	fail := func(e *Error) (*exchange, *Error) {
		call.DurationMs = time.Since(start).Milliseconds()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			e.Message = fmt.Sprintf("%s %s timed out after %s", req.Method, req.URL.Host, timeout)
		}
		e.Message = red.String(e.Message)
		call.Error = e.Message
		return nil, e
	}
	lc, release, wait := x.acquire(ctx, req, timeout)
	if wait != nil {
		return fail(wait)
	}
	defer release()
	var connected atomic.Bool
	if beforeSend != nil {
		// At most once: nothing may resend this request, not even the
		// transport's replay of a request that failed on a reused
		// connection (it replays requests whose body it can rewind).
		req.GetBody = nil
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
		}))
		if err := beforeSend(ctx); err != nil {
			e := newError(Transient, "record the call before sending it: %v", err)
			e.NotSent = true
			return fail(e)
		}
	}
	resp, err := x.client.Do(req)
	if err != nil {
		e := transportError(ctx, err, req.URL, red)
		// Until a connection is made nothing is written: a DNS, connect,
		// TLS or egress failure certainly did not reach the receiver.
		e.NotSent = beforeSend != nil && !connected.Load()
		return fail(e)
	}
	defer resp.Body.Close()
	call.StatusCode = resp.StatusCode
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	call.ResponseBody = x.recordBody(data, red)
	if err != nil {
		e := transportError(ctx, err, req.URL, red)
		e.Message = "read response: " + e.Message
		e.StatusCode = resp.StatusCode
		return fail(e)
	}
	if len(data) > maxResponseBytes {
		e := newError(Permanent, "response too large (over %d bytes)", maxResponseBytes)
		e.StatusCode = resp.StatusCode
		return fail(e)
	}
	call.DurationMs = time.Since(start).Milliseconds()
	ex := &exchange{status: resp.StatusCode, header: resp.Header, body: data}
	if e := x.observe(ctx, lc, ex); e != nil {
		call.Error = e.Message
		return nil, e
	}
	return ex, nil
}

// ctxClassify prefers the context's verdict: once the step's own deadline
// or the caller's cancellation has fired, the transport error is only a
// symptom of it.
func ctxClassify(ctx context.Context, err error) *Error {
	switch ctxErr := ctx.Err(); {
	case errors.Is(ctxErr, context.Canceled):
		return newError(Cancelled, "cancelled")
	case errors.Is(ctxErr, context.DeadlineExceeded):
		return newError(Transient, "timed out")
	}
	e := *Classify(err)
	return &e
}

// transportError classifies a failed call and words it without the raw
// URL, which may carry secrets in its query.
func transportError(ctx context.Context, err error, u *url.URL, red *secrets.Redactor) *Error {
	e := ctxClassify(ctx, err)
	if e.Class == Cancelled || ctx.Err() != nil {
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		e.Message = fmt.Sprintf("%s %s: %v", ue.Op, displayURL(u, red), ue.Err)
	}
	e.Message = red.String(e.Message)
	return e
}

// displayURL is u as it may be shown: no user info or fragment, the values
// of sensitive-looking query parameters replaced, and secrets redacted.
func displayURL(u *url.URL, red *secrets.Redactor) string {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	c.RawQuery = scrubQuery(u.RawQuery)
	return red.String(c.String())
}

var sensitiveParams = []string{"token", "key", "secret", "password", "passwd", "pwd", "auth", "sig", "code", "credential", "session"}

func scrubQuery(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, p := range parts {
		k, _, hasValue := strings.Cut(p, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		name = strings.ToLower(name)
		for _, s := range sensitiveParams {
			if hasValue && strings.Contains(name, s) {
				parts[i] = k + "=" + secrets.Redacted
				break
			}
		}
	}
	return strings.Join(parts, "&")
}

// recordBody is b as the trace keeps it: sensitive JSON fields scrubbed and
// credential values redacted first (so a secret cut by the cap cannot leave
// a fragment behind), then capped.
func (x *Executor) recordBody(b []byte, red *secrets.Redactor) string {
	if len(b) == 0 {
		return ""
	}
	b = scrubFields(b, x.sensitive)
	return capText(red.String(strings.ToValidUTF8(string(b), "\uFFFD")), maxRecordedBody)
}

// scrubFields replaces the values of sensitive fields in a JSON document;
// anything that is not JSON is returned as is.
func scrubFields(b []byte, sensitive map[string]bool) []byte {
	var doc any
	if len(sensitive) == 0 || json.Unmarshal(b, &doc) != nil {
		return b
	}
	changed := false
	var walk func(v any) any
	walk = func(v any) any {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				if sensitive[strings.ToLower(k)] {
					v[k] = "[REDACTED]"
					changed = true
					continue
				}
				v[k] = walk(e)
			}
		case []any:
			for i, e := range v {
				v[i] = walk(e)
			}
		}
		return v
	}
	doc = walk(doc)
	if !changed {
		return b
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return b
	}
	return out
}

// capText cuts s to at most n bytes on a rune boundary, marking the cut.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncatedMarker
}

// errorDetail is a short, redacted excerpt of a response body for an error
// message.
func errorDetail(b []byte, red *secrets.Redactor) string {
	s := strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "\uFFFD")), " ")
	return capText(red.String(s), maxErrorDetail)
}

// redactValue returns v with secrets redacted from every string in it,
// for outputs that end up in the trace and the API.
func redactValue(v any, red *secrets.Redactor) any {
	switch v := v.(type) {
	case string:
		return red.String(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = redactValue(e, red)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = redactValue(e, red)
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(v))
		for k, e := range v {
			out[k] = red.String(e)
		}
		return out
	}
	return v
}
