// Package server assembles Sluice's HTTP surface: /graphql (POST, SSE and
// websocket subscriptions; GraphiQL in development), /healthz and /readyz
// (/metrics is served on an address of its own, see Metrics.Handler), and
// the middleware every request passes: request id, JSON access
// log, body limit and authentication (websockets authenticate in
// connection_init instead).
package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/sluicehq/sluice/internal/bulk"
	"github.com/sluicehq/sluice/internal/concurrency"
	"github.com/sluicehq/sluice/internal/limits"
	"github.com/sluicehq/sluice/internal/pause"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/99designs/gqlgen/graphql/playground"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/graph"
	"github.com/sluicehq/sluice/graph/generated"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/connections"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/evals"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/export"
	"github.com/sluicehq/sluice/internal/protection"
	"github.com/sluicehq/sluice/internal/ratelimit"
	"github.com/sluicehq/sluice/internal/releases"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/retention"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/schedules"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/triggers"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Deps are what the server needs from the process.
type Deps struct {
	Config   *config.Config
	Log      *slog.Logger
	Client   *ent.Client // app role pool
	Auth     *auth.Authenticator
	Control  *control.Service
	Runs     *runs.Service
	Webhooks *webhook.Service
	// Escalation manages escalation policies; optional.
	Escalation *escalation.Service
	// SLA manages SLA policies and incidents; optional.
	SLA *sla.Service
	// Releases manages releases and rollbackDeployment; optional.
	Releases *releases.Service
	// Evals creates and lists evaluations; optional.
	Evals *evals.Service
	// Protection manages protected environments; optional.
	Protection *protection.Service
	Metrics    *Metrics
	// RateLimits manages limit policies; optional.
	RateLimits *ratelimit.Service
	// Schedules manages schedules; optional.
	Schedules *schedules.Service
	// Bulk runs bulk triage (bulkRunAction); optional.
	Bulk *bulk.Service
	// Triggers manages inbound webhook triggers and serves /hooks/{id}; optional.
	Triggers *triggers.Service
	// Exports manages data exports and serves their signed download URLs
	// (GET /exports/{id}/{file}); optional.
	Exports *export.Service
	// Hub fans live run changes out to subscriptions. If nil, subscriptions
	// fail with an internal error.
	Hub *events.Hub
	// Leases end websockets and SSE streams when their credential expires
	// or is revoked. If nil, streams end at expiry only.
	Leases *auth.Leases
	// Ready reports whether dependencies (database, Redis) are reachable.
	Ready func(ctx context.Context) error
	// Connections serves /oauth/callback and the connection API; optional.
	Connections *connections.Service
	// Retention serves retention policies, holds and the purge's record;
	// optional.
	Retention *retention.Service
}

// Server is the API's HTTP handler. Besides ordinary requests, which
// http.Server.Shutdown waits for, it tracks websocket connections: they are
// hijacked, so Shutdown does not see them (see WaitStreams).
type Server struct {
	http.Handler
	streams sync.WaitGroup
}

// WaitStreams blocks until every websocket and SSE stream has ended (they end
// once the Hub closes) or ctx is done.
func (s *Server) WaitStreams(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.streams.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// New returns the HTTP handler of the API.
func New(d Deps) *Server {
	s := &Server{}
	presenter := graph.ErrorPresenter(d.Log)
	schema := graph.Costed(generated.NewExecutableSchema(generated.Config{Resolvers: &graph.Resolver{Control: d.Control, Runs: d.Runs, Webhooks: d.Webhooks, Escalation: d.Escalation, SLA: d.SLA, Releases: d.Releases, Evals: d.Evals, Protection: d.Protection, RateLimits: d.RateLimits, Connections: d.Connections, Scheduler: d.Schedules, Bulk: d.Bulk, Triggers: d.Triggers, Exporter: d.Exports, PublicURL: d.Config.PublicURL, Retention: d.Retention,
		Pause: pause.New(pause.Options{Events: d.Webhooks, Runs: d.Runs}), Concurrency: concurrency.New(nil),
		Limits: limits.New(limitReleaser(d.Runs))}}))
	gql := handler.New(schema)
	// Order matters: the first transport that supports a request serves it.
	gql.AddTransport(websocketTransport(d.Config, d.Auth, d.Leases, d.Log))
	gql.AddTransport(transport.Options{})
	gql.AddTransport(transport.SSE{KeepAlivePingInterval: 10 * time.Second})
	gql.AddTransport(transport.POST{})
	gql.SetErrorPresenter(presenter)
	gql.SetRecoverFunc(graph.RecoverFunc(d.Log))
	gql.SetQueryCache(graphqlLRU(1000))
	gql.Use(depthLimit{max: d.Config.QueryDepth}) // first: cheap, and it bounds the complexity walk
	gql.Use(extension.FixedComplexityLimit(d.Config.QueryComplexity))
	if d.Config.Introspection {
		gql.Use(extension.Introspection{})
	}
	gql.SetDisableSuggestion(!d.Config.Introspection) // suggestions map the schema too
	gql.Use(argumentCheck{introspection: d.Config.Introspection})
	gql.Use(errorCodes{})
	gql.Use(unavailableStatus{})
	gql.Use(graphqlMetrics{m: d.Metrics, fields: rootFields(schema.Schema())})
	gql.Use(graph.RequestLimits{MaxResponseBytes: d.Config.MaxResponseBytes, Log: d.Log})
	gql.Use(graph.TenantTransaction{Client: d.Client, Presenter: presenter})
	gql.Use(graph.LiveUpdates{Hub: d.Hub, Client: d.Client, Presenter: presenter,
		Frames: graph.NewFrameCache(graph.FrameCacheOptions{Renders: d.Metrics.liveRenders})})

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		if err := d.Ready(ctx); err != nil {
			d.Log.WarnContext(ctx, "not ready", "err", err)
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	live := streaming(d.Hub, d.Leases, &s.streams, gql)
	mux.Handle("POST /graphql", withUnavailableStatus(readBody(d.Config.MaxBodyBytes, authenticate(d.Auth, live))))
	mux.Handle("OPTIONS /graphql", gql)
	mux.Handle("POST "+callbackRoute+"/{token}", callback(d.Runs, d.Config.MaxBodyBytes, d.Log))
	if d.Connections != nil {
		// No bearer token: the state names the tenant (internal/connections).
		mux.Handle("GET "+connections.CallbackPath, d.Connections.CallbackHandler())
	}
	if d.Triggers != nil {
		mux.Handle("POST "+triggers.PathPrefix+"{id}", d.Triggers.Handler())
	}
	if d.Exports != nil {
		// No bearer token: the URL's signature is the credential.
		mux.Handle("/exports/{id}/{file}", d.Exports.Handler())
	}
	// A websocket handshake carries no Authorization header (browsers cannot
	// set one): it goes straight to gqlgen, whose InitFunc authenticates the
	// connection_init message before any operation runs.
	var page http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", "POST, OPTIONS")
		writeError(w, http.StatusMethodNotAllowed, errs.Validation, "use POST, or a websocket (graphql-transport-ws)")
	})
	if d.Config.Introspection {
		page = playground.Handler("Sluice", "/graphql")
		mux.Handle("GET /{$}", http.RedirectHandler("/graphql", http.StatusFound))
	}
	mux.Handle("GET /graphql", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebsocketUpgrade(r) {
			live.ServeHTTP(w, r)
			return
		}
		page.ServeHTTP(w, r)
	}))
	s.Handler = withRequest(d.Log, d.Metrics, mux)
	return s
}

// statusWriter remembers the status code for the access log and metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets SSE responses stream (gqlgen asserts http.Flusher directly).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// withRequest assigns a request id (or keeps a well-formed incoming one),
// logs the request as JSON with its tenant, and records its latency.
func withRequest(log *slog.Logger, m *Metrics, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if rid == "" || len(rid) > 64 || strings.ContainsAny(rid, " \t\r\n\"") {
			rid = requestid.New()
		}
		w.Header().Set("X-Request-Id", rid)
		holder := &viewerHolder{}
		ctx := requestid.NewContext(context.WithValue(r.Context(), viewerHolderKey{}, holder), rid)
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r.WithContext(ctx))
		route, path := r.URL.Path, r.URL.Path
		switch {
		case route == "/graphql", route == "/healthz", route == "/readyz", route == "/":
		case strings.HasPrefix(route, callbackRoute+"/"):
			// The token is a credential: never logged.
			route, path = callbackRoute, callbackRoute+"/…"
		case strings.HasPrefix(route, triggers.PathPrefix):
			// The hook id is the URL's only secret part: never logged.
			route, path = "/hooks", triggers.PathPrefix+"…"
		default:
			route = "other"
		}
		d := time.Since(start)
		m.observeHTTP(route, sw.code, d)
		if route == "/healthz" {
			return
		}
		attrs := []any{"request_id", rid, "method", r.Method, "path", path, "status", sw.code, "duration_ms", float64(d.Microseconds()) / 1000}
		if holder.v != nil {
			attrs = append(attrs, "tenant_id", holder.v.TenantID, "subject", holder.v.Subject)
		}
		log.InfoContext(ctx, "http request", attrs...)
	})
}

// viewerHolder lets the access log, which runs outside authentication, name
// the tenant of the request.
type viewerHolder struct{ v *viewer.Viewer }
type viewerHolderKey struct{}

// authenticate requires a valid bearer token on every GraphQL request.
func authenticate(a *auth.Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := a.Authenticate(r.Context(), r.Header.Get("Authorization"))
		if err != nil {
			code := errs.CodeOf(err)
			status := http.StatusUnauthorized
			msg := "authentication failed"
			if e, ok := errs.As(err); ok {
				msg = e.Message
			}
			switch {
			case store.Unavailable(err):
				w.Header().Set("Retry-After", retryAfterSeconds)
				code, status, msg = errs.Unavailable, http.StatusServiceUnavailable, "the database is unavailable; retry later"
			case code == errs.Forbidden:
				status = http.StatusForbidden
			case code == errs.Unauthenticated:
			default:
				code, status, msg = errs.Internal, http.StatusInternalServerError, "internal error (request "+requestid.FromContext(r.Context())+")"
			}
			writeError(w, status, code, msg)
			return
		}
		if h, ok := r.Context().Value(viewerHolderKey{}).(*viewerHolder); ok {
			h.v = v
		}
		next.ServeHTTP(w, r.WithContext(viewer.NewContext(r.Context(), v)))
	})
}

// readBody checks a GraphQL POST before gqlgen sees it: the Content-Type
// must be application/json (415 otherwise), the body at most max bytes (413,
// with or without a Content-Length) and a JSON GraphQL request (400). gqlgen
// would report the last two as internal errors and echo the body, secrets
// included, into the log; here the caller gets a clear error and the body
// goes nowhere.
func readBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, errs.Validation, "Content-Type must be application/json")
			return
		}
		tooLarge := "request body is larger than the limit of " + itoa64(max) + " bytes"
		if r.ContentLength > max {
			writeError(w, http.StatusRequestEntityTooLarge, errs.Validation, tooLarge)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, errs.Validation, tooLarge)
			} else {
				writeError(w, http.StatusBadRequest, errs.Validation, "could not read the request body")
			}
			return
		}
		var params graphql.RawParams
		if err := json.Unmarshal(body, &params); err != nil {
			writeError(w, http.StatusBadRequest, errs.Validation, "request body is not a JSON GraphQL request: "+err.Error())
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// writeError writes a GraphQL-shaped error response outside gqlgen.
func writeError(w http.ResponseWriter, status int, code errs.Code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"errors": []map[string]any{{"message": msg, "extensions": map[string]any{"code": string(code)}}},
	})
}

var _ graphql.HandlerExtension = depthLimit{}

// limitReleaser is the run state machine as the named limits' Releaser,
// or nil without one.
func limitReleaser(r *runs.Service) limits.Releaser {
	if r == nil {
		return nil
	}
	return r
}
