package server

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/99designs/gqlgen/graphql"

	"github.com/sluicehq/sluice/internal/errs"
)

// retryAfterSeconds is the Retry-After sent with UNAVAILABLE: long enough
// for a restarting Postgres, short enough not to stall clients.
const retryAfterSeconds = "5"

// unavailableStatus marks a response that carries an UNAVAILABLE error
// (Postgres or Redis cannot be reached: nothing was done), so that
// withUnavailableStatus answers it with HTTP 503 and Retry-After rather than
// 200: clients and load balancers retry it like any other 503.
type unavailableStatus struct{}

func (unavailableStatus) ExtensionName() string                   { return "UnavailableStatus" }
func (unavailableStatus) Validate(graphql.ExecutableSchema) error { return nil }

func (unavailableStatus) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp == nil {
		return nil
	}
	for _, e := range resp.Errors {
		if code, _ := e.Extensions["code"].(string); code == string(errs.Unavailable) {
			if flag, ok := ctx.Value(unavailableKey{}).(*atomic.Bool); ok {
				flag.Store(true)
			}
			break
		}
	}
	return resp
}

type unavailableKey struct{}

// withUnavailableStatus turns the status of a marked response into 503.
func withUnavailableStatus(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		flag := &atomic.Bool{}
		uw := &unavailableWriter{ResponseWriter: w, flag: flag}
		next.ServeHTTP(uw, r.WithContext(context.WithValue(r.Context(), unavailableKey{}, flag)))
	})
}

type unavailableWriter struct {
	http.ResponseWriter
	flag  *atomic.Bool
	wrote bool
}

func (w *unavailableWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote = true
	if code == http.StatusOK && w.flag.Load() {
		w.Header().Set("Retry-After", retryAfterSeconds)
		code = http.StatusServiceUnavailable
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *unavailableWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *unavailableWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets SSE responses stream through (gqlgen asserts http.Flusher).
func (w *unavailableWriter) Flush() {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
