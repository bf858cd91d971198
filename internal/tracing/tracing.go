// Package tracing exports runs as OpenTelemetry traces over OTLP/HTTP: one
// trace per run (its id is stored on the run), a root span for the run and a
// child span per step attempt, each with the attempt's calls as events.
// Spans are emitted when the work is done, with their real start and end
// times, so nothing is held open across processes.
package tracing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// NewTraceID returns a fresh W3C trace id (32 hex characters).
func NewTraceID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// runSpanID derives the run's root span id from its id, so attempt spans
// emitted by any worker name the same parent.
func runSpanID(runID string) trace.SpanID {
	sum := sha256.Sum256([]byte("sluice-run-span:" + runID))
	var id trace.SpanID
	copy(id[:], sum[:8])
	return id
}

// Exporter sends spans to an OTLP/HTTP endpoint. A nil *Exporter does nothing.
type Exporter struct {
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// New exports to endpoint (an OTLP/HTTP base URL such as
// http://collector:4318); "" disables tracing and returns nil.
func New(ctx context.Context, endpoint, service string) (*Exporter, error) {
	if endpoint == "" {
		return nil, nil
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint+"/v1/traces"))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", service))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(fixedIDs{}),
	)
	return &Exporter{tp: tp, tracer: tp.Tracer("github.com/sluicehq/sluice")}, nil
}

// Shutdown flushes pending spans.
func (x *Exporter) Shutdown(ctx context.Context) error {
	if x == nil {
		return nil
	}
	return x.tp.Shutdown(ctx)
}

// Attempt is one step attempt to export.
type Attempt struct {
	TraceID, RunID, TenantID, StepID, StepType, AttemptID string
	Number                                                int
	Start, End                                            time.Time
	ErrorClass, ErrorMessage                              string
	Calls                                                 []map[string]any
}

// RecordAttempt exports an attempt as a child of its run's span.
func (x *Exporter) RecordAttempt(a Attempt) {
	if x == nil {
		return
	}
	tid, err := trace.TraceIDFromHex(a.TraceID)
	if err != nil {
		return
	}
	parent := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: runSpanID(a.RunID), TraceFlags: trace.FlagsSampled, Remote: true})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), parent)
	_, span := x.tracer.Start(ctx, "step "+a.StepID, trace.WithTimestamp(a.Start), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(
			attribute.String("sluice.tenant_id", a.TenantID),
			attribute.String("sluice.run_id", a.RunID),
			attribute.String("sluice.step_id", a.StepID),
			attribute.String("sluice.step_type", a.StepType),
			attribute.String("sluice.attempt_id", a.AttemptID),
			attribute.Int("sluice.attempt", a.Number),
		))
	for _, c := range a.Calls {
		attrs := []attribute.KeyValue{}
		for _, k := range []string{"kind", "method", "host", "path", "provider", "model"} {
			if v, ok := c[k].(string); ok && v != "" {
				attrs = append(attrs, attribute.String("call."+k, v))
			}
		}
		for _, k := range []string{"statusCode", "durationMs", "inputTokens", "outputTokens", "costMicroUSD"} {
			if v, ok := c[k].(float64); ok {
				attrs = append(attrs, attribute.Int64("call."+k, int64(v)))
			}
		}
		span.AddEvent("call", trace.WithAttributes(attrs...), trace.WithTimestamp(a.Start))
	}
	if a.ErrorClass != "" {
		span.SetStatus(codes.Error, a.ErrorMessage)
		span.SetAttributes(attribute.String("sluice.error_class", a.ErrorClass))
	}
	span.End(trace.WithTimestamp(a.End))
}

// RecordRun exports a finished run's root span.
func (x *Exporter) RecordRun(traceID, tenantID, runID, workflowID, versionID, status string, start, end time.Time) {
	if x == nil {
		return
	}
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return
	}
	ctx := context.WithValue(context.Background(), forcedIDs{}, forced{trace: tid, span: runSpanID(runID)})
	_, span := x.tracer.Start(ctx, "run "+runID, trace.WithNewRoot(), trace.WithTimestamp(start),
		trace.WithAttributes(
			attribute.String("sluice.tenant_id", tenantID),
			attribute.String("sluice.run_id", runID),
			attribute.String("sluice.workflow_id", workflowID),
			attribute.String("sluice.version_id", versionID),
			attribute.String("sluice.status", status),
		))
	if status == "failed" {
		span.SetStatus(codes.Error, "run failed")
	}
	span.End(trace.WithTimestamp(end))
}

// fixedIDs lets a run's root span carry the trace and span ids its
// attempts already used as their parent; other spans get random ids.
type fixedIDs struct{}

type forcedIDs struct{}

type forced struct {
	trace trace.TraceID
	span  trace.SpanID
}

func (fixedIDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if f, ok := ctx.Value(forcedIDs{}).(forced); ok {
		return f.trace, f.span
	}
	var t trace.TraceID
	var s trace.SpanID
	_, _ = rand.Read(t[:])
	_, _ = rand.Read(s[:])
	return t, s
}

func (fixedIDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	var s trace.SpanID
	_, _ = rand.Read(s[:])
	return s
}
