package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the API server's Prometheus metrics.
type Metrics struct {
	Registry     *prometheus.Registry
	httpDuration *prometheus.HistogramVec
	opDuration   *prometheus.HistogramVec
	opErrors     *prometheus.CounterVec
}

// NewMetrics registers the HTTP, GraphQL and Go runtime metrics.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_http_request_duration_seconds",
			Help:    "HTTP request latency by route and status code.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"route", "code"}),
		opDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_graphql_operation_duration_seconds",
			Help:    "GraphQL operation latency by operation type and name.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"type", "name"}),
		opErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_graphql_operation_errors_total",
			Help: "GraphQL operations that returned errors, by operation type, name and error code.",
		}, []string{"type", "name", "code"}),
	}
	reg.MustRegister(m.httpDuration, m.opDuration, m.opErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func (m *Metrics) observeHTTP(route string, code int, d time.Duration) {
	m.httpDuration.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// graphqlMetrics is a gqlgen extension recording operation latency and errors.
type graphqlMetrics struct{ m *Metrics }

func (graphqlMetrics) ExtensionName() string                   { return "Metrics" }
func (graphqlMetrics) Validate(graphql.ExecutableSchema) error { return nil }

func (g graphqlMetrics) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	start := time.Now()
	resp := next(ctx)
	op := graphql.GetOperationContext(ctx)
	typ, name := "unknown", op.OperationName
	if op.Operation != nil {
		typ = string(op.Operation.Operation)
		if name == "" {
			name = op.Operation.Name
		}
	}
	if name == "" {
		name = "anonymous"
	}
	if typ != "subscription" {
		// A subscription's response takes as long as its next event: not a
		// latency worth a histogram.
		g.m.opDuration.WithLabelValues(typ, name).Observe(time.Since(start).Seconds())
	}
	if resp != nil {
		for _, e := range resp.Errors {
			code, _ := e.Extensions["code"].(string)
			g.m.opErrors.WithLabelValues(typ, name, code).Inc()
		}
	}
	return resp
}

// errorCodes maps gqlgen's own error codes onto Sluice's (README, DESIGN):
// a client handles one VALIDATION code for any bad request, and keeps the
// original in extensions.reason.
type errorCodes struct{}

var gqlgenCodes = map[string]bool{
	"GRAPHQL_VALIDATION_FAILED": true,
	"GRAPHQL_PARSE_FAILED":      true,
	"COMPLEXITY_LIMIT_EXCEEDED": true,
}

func (errorCodes) ExtensionName() string                   { return "ErrorCodes" }
func (errorCodes) Validate(graphql.ExecutableSchema) error { return nil }

func (errorCodes) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp == nil {
		return nil
	}
	for _, e := range resp.Errors {
		if code, _ := e.Extensions["code"].(string); gqlgenCodes[code] {
			e.Extensions["code"] = "VALIDATION"
			e.Extensions["reason"] = code
		}
	}
	return resp
}
