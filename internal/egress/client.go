package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// NewClient returns the egress HTTP client for cfg. It never uses a proxy
// (HTTP_PROXY and friends are ignored, so a proxy cannot launder a denied
// destination), returns 3xx responses to the caller instead of following
// them, and refuses at dial time any address the policy denies; such
// errors wrap ErrDenied.
func NewClient(cfg Config) *http.Client {
	p := newPolicy(cfg)
	dialer := &net.Dialer{
		Timeout:   dialTimeout,
		KeepAlive: 30 * time.Second,
		Control:   p.control,
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   tlsTimeout,
		ResponseHeaderTimeout: responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   10,
	}
	return &http.Client{
		Transport: &guardedTransport{base: transport, timeout: p.timeout},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			// A redirect could point anywhere, including at a destination
			// the caller would have refused; the caller sees the 3xx.
			return http.ErrUseLastResponse
		},
	}
}

// guardedTransport refuses non-HTTP schemes and applies the default
// timeout to requests whose context has no deadline.
type guardedTransport struct {
	base    http.RoundTripper
	timeout time.Duration
}

func (t *guardedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkScheme(strings.ToLower(req.URL.Scheme), false); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if _, ok := req.Context().Deadline(); ok {
		resp, err := t.base.RoundTrip(req)
		return resp, reword(req, err)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, reword(req, err)
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// reword replaces a dial-time refusal, whose text quotes the address the
// host resolved to, with one that names the host only.
func reword(req *http.Request, err error) error {
	var d *dialDenied
	if err == nil || !errors.As(err, &d) {
		return err
	}
	return denied(req.URL.Hostname(), d.port, d.err)
}

// cancelOnClose keeps the timeout context alive while the caller reads the
// body, and releases it when the body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
