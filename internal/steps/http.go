package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/secrets"
)

// defaultHTTPTimeout applies to http steps that set no timeout.
const defaultHTTPTimeout = 30 * time.Second

// HTTP runs an http step: it renders the request from the step's templates,
// injects the credential, sends it and judges the response against the
// step's expect. The output is {"status", "headers", "body"}: header names
// lower-case with their first value, the body parsed when the response is
// JSON and a string otherwise. A failure is an *Error; the Result is
// returned with it whenever a call was made, so the call can be traced.
func (x *Executor) HTTP(ctx context.Context, req Request) (*Result, error) {
	s := req.Step
	if s == nil || s.Request == nil {
		return nil, newError(Permanent, "http step has no request")
	}
	red := newRedactor(req.Credential)
	timeout := stepTimeout(s, defaultHTTPTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	hreq, body, e := buildHTTPRequest(ctx, req, red)
	if e != nil {
		return nil, e
	}
	if extra, e := x.authorize(ctx, req.Credential, hreq); e != nil {
		e.Message = red.String(e.Message)
		return nil, e
	} else if len(extra) > 0 {
		red = newRedactor(req.Credential, extra...)
	}

	res := &Result{Calls: []Call{{Kind: "http"}}}
	call := &res.Calls[0]
	ex, e := x.sendCached(ctx, req, timeout, red, call, hreq, body) // send, through the response cache (cache.go)
	if e != nil {
		return res, e
	}
	if ex.status == http.StatusUnauthorized && req.Credential != nil && req.Credential.Type == CredentialOAuth2 {
		if req.Credential.Tokens != nil {
			// A connection: refresh and send again, once (connection.go).
			if ex, red, e = x.resendAuthorized(ctx, req, timeout, res, hreq, ex, red); e != nil {
				return res, e
			}
			call = &res.Calls[len(res.Calls)-1]
		} else {
			x.tokens.forget(req.Credential) // the next attempt fetches a fresh token
		}
	}
	out, e := x.httpOutcome(s, hreq.Method, ex, red)
	if e != nil {
		call.Error = e.Message
		return res, e
	}
	res.Output = out
	return res, nil
}

func buildHTTPRequest(ctx context.Context, req Request, red *secrets.Redactor) (*http.Request, []byte, *Error) {
	r := req.Step.Request
	bad := func(what string, err error) *Error {
		return newError(Permanent, "%s: %s", what, red.String(err.Error()))
	}
	// Expression errors name their JSON path in the definition.
	evalErr := func(err error) *Error {
		return newError(Permanent, "%s", red.String(err.Error()))
	}
	path := req.Step.Path() + ".request"
	method := strings.ToUpper(r.Method)
	if method == "" {
		method = http.MethodGet
	}

	rawURL, err := definition.Interpolate(path+".url", r.URL, req.Env)
	if err != nil {
		return nil, nil, evalErr(err)
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, newError(Permanent, "request.url: %q is not an absolute http or https URL", red.String(rawURL))
	}
	if len(r.Query) > 0 {
		q := u.Query()
		for _, k := range sortedKeys(r.Query) {
			v, err := definition.Interpolate(definition.JoinKey(path+".query", k), r.Query[k], req.Env)
			if err != nil {
				return nil, nil, evalErr(err)
			}
			q.Set(k, v)
		}
		u.RawQuery = q.Encode()
	}

	var body []byte
	var contentType string
	switch b := r.Body.(type) {
	case nil:
	case string:
		s, err := definition.Interpolate(path+".body", b, req.Env)
		if err != nil {
			return nil, nil, evalErr(err)
		}
		body, contentType = []byte(s), "text/plain; charset=utf-8"
	default:
		v, err := definition.EvalTemplateValue(path+".body", b, req.Env)
		if err != nil {
			return nil, nil, evalErr(err)
		}
		if body, err = json.Marshal(v); err != nil {
			return nil, nil, bad("request.body", err)
		}
		contentType = "application/json"
	}

	hreq, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, bad("request", err)
	}
	if body == nil {
		hreq.Body, hreq.GetBody, hreq.ContentLength = http.NoBody, nil, 0
	}
	for _, k := range sortedKeys(r.Headers) {
		v, err := definition.Interpolate(definition.JoinKey(path+".headers", k), r.Headers[k], req.Env)
		if err != nil {
			return nil, nil, evalErr(err)
		}
		hreq.Header.Set(k, v)
	}
	if contentType != "" && hreq.Header.Get("Content-Type") == "" {
		hreq.Header.Set("Content-Type", contentType)
	}
	sendsKey := req.Step.SideEffect || (method != http.MethodGet && method != http.MethodHead)
	if key := idempotencyKey(req); sendsKey && key != "" && hreq.Header.Get(idempotency.Header) == "" {
		hreq.Header.Set(idempotency.Header, key)
	}
	return hreq, body, nil
}

// httpOutcome judges a response against the step's expect and builds the
// output. Statuses listed in expect.status are successes even when they
// are not 2xx; expect.schema applies to 2xx bodies.
func (x *Executor) httpOutcome(s *definition.Step, method string, ex *exchange, red *secrets.Redactor) (map[string]any, *Error) {
	var expect definition.Expect
	if s.Expect != nil {
		expect = *s.Expect
	}
	ok2xx := ex.status >= 200 && ex.status < 300
	if !slices.Contains(expect.Status, ex.status) {
		switch {
		case ok2xx && len(expect.Status) > 0:
			e := newError(SchemaDrift, "status %d not in expected %v", ex.status, expect.Status)
			e.StatusCode = ex.status
			return nil, e
		case !ok2xx:
			return nil, statusError(ex.status, ex.header, x.now(), responseDetail(ex, red))
		}
	}

	hasSchema := len(bytes.TrimSpace(expect.Schema)) > 0
	body, err := decodeBody(method, ex)
	if err != nil {
		if hasSchema && ok2xx {
			e := newError(SchemaDrift, "response body is not valid JSON: %s", red.String(err.Error()))
			e.StatusCode = ex.status
			return nil, e
		}
		body = strings.ToValidUTF8(string(ex.body), "\uFFFD")
	}
	if hasSchema && ok2xx {
		if e := checkSchema(expect.Schema, body, red); e != nil {
			e.StatusCode = ex.status
			return nil, e
		}
	}

	headers := make(map[string]string, len(ex.header))
	for k, v := range ex.header {
		if len(v) > 0 {
			headers[strings.ToLower(k)] = red.String(v[0])
		}
	}
	return map[string]any{
		"status":  ex.status,
		"headers": headers,
		"body":    redactValue(definition.NormalizeJSON(body), red),
	}, nil
}

// responseDetail quotes a failed response for its error message: the
// redirect target for a 3xx, otherwise an excerpt of the body.
func responseDetail(ex *exchange, red *secrets.Redactor) string {
	if ex.status >= 300 && ex.status < 400 {
		if loc, err := url.Parse(ex.header.Get("Location")); err == nil && loc.String() != "" {
			return "Location " + displayURL(loc, red)
		}
		return ""
	}
	return errorDetail(ex.body, red)
}

// decodeBody parses a JSON response (numbers kept as json.Number until
// the schema has seen them); anything else is returned as text. An error
// means the response claimed JSON but is not.
func decodeBody(method string, ex *exchange) (any, error) {
	if method == http.MethodHead || len(bytes.TrimSpace(ex.body)) == 0 {
		if isJSON(ex.header.Get("Content-Type")) {
			return nil, nil
		}
		return string(ex.body), nil
	}
	if !isJSON(ex.header.Get("Content-Type")) {
		return strings.ToValidUTF8(string(ex.body), "\uFFFD"), nil
	}
	dec := json.NewDecoder(bytes.NewReader(ex.body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return v, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// checkSchema validates a response body against expect.schema, naming the
// JSON paths of the violations.
func checkSchema(schema json.RawMessage, body any, red *secrets.Redactor) *Error {
	err := definition.ValidateJSON(schema, body)
	if err == nil {
		return nil
	}
	var ve *definition.ValidationError
	if !errors.As(err, &ve) {
		// The schema was checked at publish, so this is a broken version.
		return newError(Permanent, "expect.schema: %s", red.String(err.Error()))
	}
	const shown = 5
	parts := make([]string, 0, min(len(ve.Problems), shown))
	for i, p := range ve.Problems {
		if i == shown {
			parts = append(parts, fmt.Sprintf("and %d more", len(ve.Problems)-shown))
			break
		}
		parts = append(parts, p.String())
	}
	return newError(SchemaDrift, "response does not match expect.schema: %s", red.String(strings.Join(parts, "; ")))
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
