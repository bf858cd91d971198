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
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/sluicehq/sluice/graph"
	"github.com/sluicehq/sluice/internal/tally"
)

// Metrics are the API server's Prometheus metrics.
type Metrics struct {
	Registry     *prometheus.Registry
	httpDuration *prometheus.HistogramVec
	opDuration   *prometheus.HistogramVec
	opErrors     *prometheus.CounterVec
	liveRenders  *prometheus.CounterVec
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
			Help:    "GraphQL operation latency by operation type and first top-level field.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"type", "field"}),
		opErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_graphql_operation_errors_total",
			Help: "GraphQL operation errors, by operation type, first top-level field and error code.",
		}, []string{"type", "field", "code"}),
		liveRenders: graph.NewLiveRendersCounter(),
	}
	reg.MustRegister(m.httpDuration, m.opDuration, m.opErrors, m.liveRenders,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// This process's Postgres and Redis round trips, by path.
	if err := tally.Register(reg); err != nil {
		panic(err)
	}
	return m
}

// Handler serves /metrics. The API mounts it on its metrics address
// (SLUICE_METRICS_ADDR), never on the public port: series name operations
// of every tenant.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func (m *Metrics) observeHTTP(route string, code int, d time.Duration) {
	m.httpDuration.WithLabelValues(route, strconv.Itoa(code)).Observe(d.Seconds())
}

// graphqlMetrics is a gqlgen extension recording operation latency and
// errors. Labels take no value the client chooses (an operation name would
// let any caller grow /metrics without bound): the operation type, the
// first top-level field when the schema has it (else "other"), the error
// code.
type graphqlMetrics struct {
	m      *Metrics
	fields map[string]bool // root fields of the schema
}

// rootFields lists the fields of the schema's query, mutation and
// subscription types.
func rootFields(s *ast.Schema) map[string]bool {
	out := map[string]bool{}
	for _, def := range []*ast.Definition{s.Query, s.Mutation, s.Subscription} {
		if def == nil {
			continue
		}
		for _, f := range def.Fields {
			out[f.Name] = true
		}
	}
	return out
}

func (graphqlMetrics) ExtensionName() string                   { return "Metrics" }
func (graphqlMetrics) Validate(graphql.ExecutableSchema) error { return nil }

// labels returns the operation's bounded type and field labels.
func (g graphqlMetrics) labels(op *graphql.OperationContext) (typ, field string) {
	typ, field = "unknown", "other"
	if op.Operation == nil {
		return typ, field
	}
	switch op.Operation.Operation {
	case ast.Query, ast.Mutation, ast.Subscription:
		typ = string(op.Operation.Operation)
	}
	for _, sel := range op.Operation.SelectionSet {
		if f, ok := sel.(*ast.Field); ok {
			if g.fields[f.Name] {
				field = f.Name
			}
			break
		}
	}
	return typ, field
}

func (g graphqlMetrics) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	start := time.Now()
	typ, field := g.labels(graphql.GetOperationContext(ctx))
	var t *tally.Tally
	if typ == "query" || typ == "mutation" {
		// Its wire cost, by field (sluice_postgres_round_trips_total{path="api:startRun"}).
		t = &tally.Tally{}
		ctx = tally.With(ctx, t)
	}
	resp := next(ctx)
	if t != nil {
		tally.Record("api:"+field, t)
	}
	if typ != "subscription" {
		// A subscription's response takes as long as its next event: not a
		// latency worth a histogram.
		g.m.opDuration.WithLabelValues(typ, field).Observe(time.Since(start).Seconds())
	}
	if resp != nil {
		for _, e := range resp.Errors {
			code, _ := e.Extensions["code"].(string)
			if !knownCodes[code] {
				code = "other"
			}
			g.m.opErrors.WithLabelValues(typ, field, code).Inc()
		}
	}
	return resp
}

// knownCodes are the error codes a label may carry; anything else counts as
// "other" (codes are Sluice's, but an extension could set one from input).
var knownCodes = map[string]bool{
	"UNAUTHENTICATED": true, "FORBIDDEN": true, "NOT_FOUND": true, "VALIDATION": true,
	"CONFLICT": true, "RATE_LIMITED": true, "INTERNAL": true, "UNAVAILABLE": true,
	"GRAPHQL_VALIDATION_FAILED": true, "GRAPHQL_PARSE_FAILED": true, "COMPLEXITY_LIMIT_EXCEEDED": true,
	"": true,
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
