package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"
	coderws "github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

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
// browsers and need no pattern. Authentication happens in connection_init.
func websocketTransport(cfg *config.Config, a *auth.Authenticator, log *slog.Logger) transport.Websocket {
	limit := cfg.MaxBodyBytes
	return transport.Websocket{
		Implementation: transport.CoderWebsocketImplementation{
			AcceptOptions: coderws.AcceptOptions{OriginPatterns: cfg.AllowedOrigins},
		},
		InitFunc:              websocketInit(a, log),
		InitTimeout:           10 * time.Second,
		KeepAlivePingInterval: 10 * time.Second,
		// graphql-transport-ws has no keep-alive message: ping, so proxies see
		// traffic, without requiring the pong (TCP keep-alive finds dead peers).
		PingPongInterval: 10 * time.Second,
		MissingPongOk:    true,
		PayloadReadLimit: &limit,
	}
}

// websocketInit authenticates a websocket from its connection_init payload:
// {"Authorization": "Bearer ..."} (or "authorization"), or {"token": "..."}.
// A refusal closes the socket with 4401 (or 4403 for a token without a role
// in its tenant). gqlgen panics on a nil ctx, so refusals return one.
func websocketInit(a *auth.Authenticator, log *slog.Logger) transport.WebsocketInitFunc {
	return func(ctx context.Context, p transport.InitPayload) (context.Context, *transport.InitPayload, error) {
		var (
			v     *viewer.Viewer
			err   error
			token string
		)
		switch {
		case p.Authorization() != "":
			v, err = a.Authenticate(ctx, p.Authorization())
			if _, t, ok := strings.Cut(strings.TrimSpace(p.Authorization()), " "); ok {
				token = strings.TrimSpace(t)
			}
		case p.GetString("token") != "":
			token = strings.TrimSpace(p.GetString("token"))
			v, err = a.AuthenticateToken(ctx, token)
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
		ctx = viewer.NewContext(ctx, v)
		if exp, ok := jwtExpiry(token); ok {
			// The connection lives no longer than its credential.
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, exp)
			context.AfterFunc(ctx, cancel) // released when the socket closes
		}
		return ctx, nil, nil
	}
}

// jwtExpiry reads exp from a token Authenticate has already verified. API
// keys are not JWTs and report false.
func jwtExpiry(token string) (time.Time, bool) {
	if token == "" || strings.HasPrefix(token, auth.APIKeyPrefix) {
		return time.Time{}, false
	}
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(token, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}, false
	}
	return claims.ExpiresAt.Time, true
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
// a request, is lifted from an SSE stream that may last hours.
func streaming(hub *events.Hub, active *sync.WaitGroup, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebsocketUpgrade(r) && !isEventStream(r) {
			next.ServeHTTP(w, r)
			return
		}
		active.Add(1)
		defer active.Done()
		if !isWebsocketUpgrade(r) {
			// Hijacked websockets have their deadlines cleared by net/http.
			_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		if hub != nil {
			// No goroutine per connection until shutdown begins.
			stop := context.AfterFunc(hub.Closing(), func() { time.AfterFunc(shutdownGrace, cancel) })
			defer stop()
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
