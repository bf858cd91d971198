package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Websocket close codes for a refused connection_init (graphql-transport-ws
// clients treat 4xxx as final).
const (
	closeUnauthorized = 4401
	closeForbidden    = 4403
)

// shutdownGrace lets a stream's last message (a resume hint) reach the
// client before its connection is closed at shutdown.
const shutdownGrace = 500 * time.Millisecond

// websocketTransport is graphql-transport-ws (and the legacy graphql-ws) on
// coder/websocket. Browsers are refused unless their Origin is the API's
// own host or matches cfg.AllowedOrigins; clients sending no Origin are not
// browsers and need no pattern. Authentication happens in connection_init;
// the connection then lives as long as its credential (leases).
func websocketTransport(cfg *config.Config, a *auth.Authenticator, leases *auth.Leases, log *slog.Logger) graphql.Transport {
	limit := cfg.MaxBodyBytes
	return closingWebsocket{transport.Websocket{
		Implementation: transport.CoderWebsocketImplementation{
			AcceptOptions: coderws.AcceptOptions{OriginPatterns: cfg.AllowedOrigins},
		},
		InitFunc:              websocketInit(a, leases, log),
		InitTimeout:           10 * time.Second,
		KeepAlivePingInterval: 10 * time.Second,
		// graphql-transport-ws has no keep-alive message: ping, so proxies see
		// traffic, without requiring the pong (TCP keep-alive finds dead peers).
		PingPongInterval: 10 * time.Second,
		MissingPongOk:    true,
		PayloadReadLimit: &limit,
	}}
}

// websocketInit authenticates a websocket from its connection_init payload:
// {"Authorization": "Bearer ..."} (or "authorization"), or {"token": "..."}.
// A refusal closes the socket with 4401 (or 4403 for a token without a role
// in its tenant). gqlgen panics on a nil ctx, so refusals return one. An
// accepted connection gets a lease: when the credential expires or is
// revoked, its subscriptions end with UNAUTHENTICATED and the socket closes
// with 4401.
func websocketInit(a *auth.Authenticator, leases *auth.Leases, log *slog.Logger) transport.WebsocketInitFunc {
	return func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		var (
			v   *viewer.Viewer
			err error
		)
		switch {
		case p.Authorization() != "":
			v, err = a.Authenticate(ctx, p.Authorization())
		case p.GetString("token") != "":
			v, err = a.AuthenticateToken(ctx, strings.TrimSpace(p.GetString("token")))
		default:
			err = errs.E(errs.Unauthenticated, "connection_init must carry Authorization: Bearer <token>")
		}
		if err != nil {
			code, reason, msg := closeUnauthorized, "unauthorized", "authentication failed"
			if e, ok := errs.As(err); ok {
				msg = e.Message
			}
			switch errs.CodeOf(err) {
			case errs.Unauthenticated:
			case errs.Forbidden:
				code, reason = closeForbidden, "forbidden"
			default:
				rid := requestid.FromContext(ctx)
				log.ErrorContext(ctx, "websocket authentication", "err", err, "request_id", rid)
				code, reason, msg = int(coderws.StatusInternalError), "internal error", "internal error (request "+rid+")"
			}
			return transport.WithWebsocketCloseCode(transport.AppendCloseReason(ctx, reason), code), nil, errors.New(msg)
		}
		if h, ok := ctx.Value(viewerHolderKey{}).(*viewerHolder); ok {
			h.v = v
		}
		lease := leases.Open(v)
		if ws, ok := ctx.Value(wsConnKey{}).(*wsConn); ok {
			ws.setLease(lease)
		} else {
			lease.Close() // not through closingWebsocket: nothing would release it
		}
		return auth.WithLease(viewer.NewContext(ctx, v), lease), nil, nil
	}
}

// closingWebsocket is gqlgen's websocket transport with two guarantees it
// lacks. Whatever path Do returns by, the connection is closed and its
// descriptor released: gqlgen v0.17.98 returns without closing when a
// connection_init payload is not a JSON object, which left the socket open
// forever (this closes it with 4400). And a connection whose credential
// ends (lease) is closed with 4401, where gqlgen would close with 1000.
type closingWebsocket struct{ transport.Websocket }

var _ graphql.Transport = closingWebsocket{}

// Close codes beyond gqlgen's own.
const closeBadRequest = 4400

// credentialEndGrace lets the last messages of a connection's subscriptions
// (their UNAUTHENTICATED errors) go out before it closes with 4401.
const credentialEndGrace = 250 * time.Millisecond

type wsConnKey struct{}

func (t closingWebsocket) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ws := &wsConn{}
	inner := t.Websocket
	impl := t.Implementation
	if impl == nil {
		impl = transport.CoderWebsocketImplementation{} // gqlgen's own default
	}
	inner.Implementation = acceptRecorder{inner: impl, ws: ws}
	inner.Do(w, r.WithContext(context.WithValue(r.Context(), wsConnKey{}, ws)), exec)
	ws.finish()
}

// acceptRecorder wraps the connection it accepts in ws.
type acceptRecorder struct {
	inner transport.WebsocketImplementation
	ws    *wsConn
}

func (a acceptRecorder) Accept(w http.ResponseWriter, r *http.Request, o transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	c, err := a.inner.Accept(w, r, o)
	if err != nil {
		return nil, err
	}
	a.ws.mu.Lock()
	a.ws.WebsocketConn = c
	a.ws.mu.Unlock()
	return a.ws, nil
}

// wsConn is one accepted connection as gqlgen uses it, remembering whether
// it wrote anything (connection_ack first) and whether a close was sent.
type wsConn struct {
	transport.WebsocketConn
	mu      sync.Mutex
	wrote   bool
	closing bool
	lease   *auth.Lease
	ended   bool // Do returned
}

func (c *wsConn) WriteJSON(v any) error {
	c.mu.Lock()
	c.wrote = true
	c.mu.Unlock()
	return c.WebsocketConn.WriteJSON(v)
}

// WriteClose sends the first close only: a 4401 for an ended credential is
// not overwritten by gqlgen's 1000 that follows.
func (c *wsConn) WriteClose(code int, msg string) error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	return c.WebsocketConn.WriteClose(code, msg)
}

func (c *wsConn) SetReadLimit(n int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(n)
	}
}

func (c *wsConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}

// closeWith closes the connection with code unless a close was sent.
func (c *wsConn) closeWith(code int, reason string) {
	_ = c.WriteClose(code, reason)
	_ = c.Close()
}

// setLease ties the connection to its credential's lease: when the lease
// ends, the connection's subscriptions end with its error (they watch it)
// and, shortly after, the socket closes with 4401.
func (c *wsConn) setLease(l *auth.Lease) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		l.Close()
		return
	}
	c.lease = l
	l.AfterEnd(func() {
		time.AfterFunc(credentialEndGrace, func() { c.closeWith(closeUnauthorized, "unauthorized: credential ended") })
	})
}

// finish runs when gqlgen's Do returns: the connection is over.
func (c *wsConn) finish() {
	c.mu.Lock()
	c.ended = true
	accepted, wrote, lease := c.WebsocketConn != nil, c.wrote, c.lease
	c.mu.Unlock()
	lease.Close()
	if !accepted {
		return
	}
	if !wrote {
		// Nothing acknowledged: connection_init was refused without a
		// close (a payload that is not a JSON object).
		c.closeWith(closeBadRequest, "connection_init payload must be a JSON object")
		return
	}
	c.closeWith(int(coderws.StatusNormalClosure), "terminated")
}

// isWebsocketUpgrade reports a websocket handshake.
func isWebsocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// isEventStream reports a GraphQL-over-SSE request.
func isEventStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/event-stream")
}

// streaming prepares a long-lived request (websocket or SSE): it ends when
// the Hub closes at shutdown, and the server's ReadTimeout, meant for reading
// a request, is lifted from an SSE stream that may last hours. An SSE
// stream, authenticated by now, lives as long as its credential: when its
// lease ends, the subscription ends with an UNAUTHENTICATED error (it
// watches the lease), and anything still running is cut after a grace.
// Websockets get their lease in connection_init (websocketInit).
func streaming(hub *events.Hub, leases *auth.Leases, active *sync.WaitGroup, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebsocketUpgrade(r) && !isEventStream(r) {
			next.ServeHTTP(w, r)
			return
		}
		active.Add(1)
		defer active.Done()
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		if !isWebsocketUpgrade(r) {
			// Hijacked websockets have their deadlines cleared by net/http.
			_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
			lease := leases.Open(viewer.FromContext(ctx))
			defer lease.Close()
			stop := lease.AfterEnd(func() { time.AfterFunc(shutdownGrace, cancel) })
			defer stop()
			ctx = auth.WithLease(ctx, lease)
		}
		if hub != nil {
			// No goroutine per connection until shutdown begins.
			stop := context.AfterFunc(hub.Closing(), func() { time.AfterFunc(shutdownGrace, cancel) })
			defer stop()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
