package steps

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/secrets"
)

// CredentialClass: a step's connection needs a person to authorize it again
// (internal/connections). The run state machine does not fail such an
// attempt: the step waits for the connection; it fails with this class
// only when the wait times out.
const CredentialClass Class = "credential"

// ErrNeedsAuthorization is what a TokenSource returns when its connection
// cannot give a token until someone authorizes it again (revoked grant,
// invalid_grant, never authorized).
var ErrNeedsAuthorization = errors.New("the connection needs to be authorized again")

// TokenSource gives the access token of an oauth2 credential that is a
// connection (internal/connections): cached, refreshed and rotated in
// Postgres, shared by every worker. rejected, when not empty, is a token
// the API just answered 401 to: the source refreshes unless the stored
// token already changed.
type TokenSource interface {
	AccessToken(ctx context.Context, rejected string) (string, error)
}

// connectionToken asks c's connection for a token and classifies failures.
// They happen before the step's request is sent (NotSent: an at_most_once
// step may try again).
func connectionToken(ctx context.Context, c *Credential, rejected string) (string, *Error) {
	tok, err := c.Tokens.AccessToken(ctx, rejected)
	if err == nil {
		return tok, nil
	}
	var e Error
	var se *Error
	switch {
	case errors.Is(err, ErrNeedsAuthorization):
		e = *newError(CredentialClass, "oauth2 connection: %s", err.Error())
	case errors.As(err, &se):
		e = *se
	default:
		e = *ctxClassify(ctx, err)
		e.Message = "oauth2 connection: " + e.Message
	}
	e.NotSent = true
	return "", &e
}

// resendAuthorized handles a 401 to a connection's token: once per attempt,
// it asks the connection for a fresh token (refreshing unless another
// worker already did) and sends the request again, recording a second
// call. Steps whose sends are recorded (at_most_once) never send twice.
func (x *Executor) resendAuthorized(ctx context.Context, req Request, timeout time.Duration, res *Result, hreq *http.Request, ex *exchange, red *secrets.Redactor) (*exchange, *secrets.Redactor, *Error) {
	c := req.Credential
	if c == nil || c.Tokens == nil || req.BeforeSend != nil || ex.status != http.StatusUnauthorized {
		return ex, red, nil
	}
	rejected := strings.TrimPrefix(hreq.Header.Get("Authorization"), "Bearer ")
	tok, e := connectionToken(ctx, c, rejected)
	if e != nil {
		e.Message = red.String(e.Message)
		return nil, red, e
	}
	red = newRedactor(c, rejected, tok)
	again, body, e := buildHTTPRequest(ctx, req, red)
	if e != nil {
		return nil, red, e
	}
	again.Header.Set("Authorization", "Bearer "+tok)
	res.Calls = append(res.Calls, Call{Kind: "http"})
	ex2, e := x.send(ctx, timeout, red, &res.Calls[len(res.Calls)-1], again, body, nil)
	return ex2, red, e
}
