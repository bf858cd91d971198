package server

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	coderws "github.com/coder/websocket"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/livews"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Websocket close codes for a refused connection_init (graphql-transport-ws
// clients treat 4xxx as final).
const (
	closeUnauthorized = 4401
	closeForbidden    = 4403
	closeBadRequest   = livews.CloseBadRequest // connection_init payload not a JSON object
)

// shutdownGrace lets a stream's last message (a resume hint) reach the
// client before its connection is closed at shutdown.
const shutdownGrace = 500 * time.Millisecond

// websocketTransport is graphql-transport-ws (and the legacy graphql-ws):
// Sluice's own (internal/livews), which writes a subscription's frames
// without encoding them twice. Browsers are refused unless their Origin is
// the API's own host or matches cfg.AllowedOrigins; clients sending no
// Origin are not browsers and need no pattern. Authentication happens in
// connection_init; the connection then lives as long as its credential
// (leases).
func websocketTransport(cfg *config.Config, a *auth.Authenticator, leases *auth.Leases, log *slog.Logger) graphql.Transport {
	return livews.Transport{
		AcceptOptions: coderws.AcceptOptions{OriginPatterns: cfg.AllowedOrigins},
		InitFunc:      websocketInit(a, leases, log),
		InitTimeout:   10 * time.Second,
		// graphql-ws clients get "ka" messages; graphql-transport-ws has no
		// keep-alive message: ping, so proxies see traffic, without requiring
		// the pong (TCP keep-alive finds dead peers).
		KeepAliveInterval: 10 * time.Second,
		PingInterval:      10 * time.Second,
		PayloadReadLimit:  cfg.MaxBodyBytes,
	}
}

// websocketInit authenticates a websocket from its connection_init payload:
// {"Authorization": "Bearer ..."} (or "authorization"), or {"token": "..."}.
// A refusal closes the socket with 4401 (or 4403 for a token without a role
// in its tenant). An accepted connection gets a lease: when the credential
// expires or is revoked, its subscriptions end with UNAUTHENTICATED and,
// shortly after, the socket closes with 4401.
func websocketInit(a *auth.Authenticator, leases *auth.Leases, log *slog.Logger) livews.InitFunc {
	return func(ctx context.Context, c *livews.Conn, p livews.InitPayload) (context.Context, error) {
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
			refusal := &livews.InitError{Code: closeUnauthorized, Reason: "unauthorized", Message: "authentication failed"}
			if e, ok := errs.As(err); ok {
				refusal.Message = e.Message
			}
			switch errs.CodeOf(err) {
			case errs.Unauthenticated:
			case errs.Forbidden:
				refusal.Code, refusal.Reason = closeForbidden, "forbidden"
			default:
				rid := requestid.FromContext(ctx)
				log.ErrorContext(ctx, "websocket authentication", "err", err, "request_id", rid)
				refusal.Code, refusal.Reason, refusal.Message = int(coderws.StatusInternalError), "internal error", "internal error (request "+rid+")"
			}
			return ctx, refusal
		}
		if h, ok := ctx.Value(viewerHolderKey{}).(*viewerHolder); ok {
			h.v = v
		}
		lease := leases.Open(v)
		stop := lease.AfterEnd(func() {
			time.AfterFunc(credentialEndGrace, func() { c.Close(closeUnauthorized, "unauthorized: credential ended") })
		})
		c.OnEnd(func() { stop(); lease.Close() })
		return auth.WithLease(viewer.NewContext(ctx, v), lease), nil
	}
}

// credentialEndGrace lets the last messages of a connection's subscriptions
// (their UNAUTHENTICATED errors) go out before it closes with 4401.
const credentialEndGrace = 250 * time.Millisecond

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
