package tracing

import (
	"context"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is a minimal OTLP/HTTP trace receiver.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func TestRunTraceExported(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	x, err := New(context.Background(), srv.URL, "sluice-test")
	if err != nil {
		t.Fatal(err)
	}
	traceID := NewTraceID()
	start := time.Now().Add(-2 * time.Second)
	x.RecordAttempt(Attempt{TraceID: traceID, RunID: "run_1", StepID: "fetch", StepType: "http", AttemptID: "att_1", Number: 1,
		Start: start, End: start.Add(300 * time.Millisecond), ErrorClass: "transient", ErrorMessage: "503",
		Calls: []map[string]any{{"kind": "http", "method": "GET", "host": "api.example.com", "statusCode": float64(503)}}})
	x.RecordRun(traceID, "ten_1", "run_1", "wf_1", "wfv_1", "succeeded", start, start.Add(time.Second))
	if err := x.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.spans) != 2 {
		t.Fatalf("got %d spans, want 2", len(col.spans))
	}
	var run, step *tracepb.Span
	for _, s := range col.spans {
		if hex.EncodeToString(s.TraceId) != traceID {
			t.Fatalf("span %q has trace %x, want %s", s.Name, s.TraceId, traceID)
		}
		switch s.Name {
		case "run run_1":
			run = s
		case "step fetch":
			step = s
		}
	}
	if run == nil || step == nil {
		t.Fatalf("spans: %v", col.spans)
	}
	if string(step.ParentSpanId) != string(run.SpanId) {
		t.Fatalf("attempt span's parent %x is not the run span %x", step.ParentSpanId, run.SpanId)
	}
	if step.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || len(step.Events) != 1 {
		t.Fatalf("attempt span status %v events %d", step.Status, len(step.Events))
	}
	if got := time.Duration(step.EndTimeUnixNano - step.StartTimeUnixNano); got != 300*time.Millisecond {
		t.Fatalf("attempt span lasts %v, want 300ms", got)
	}
}

func TestDisabledExporterIsNil(t *testing.T) {
	x, err := New(context.Background(), "", "s")
	if err != nil || x != nil {
		t.Fatalf("New(\"\") = %v, %v", x, err)
	}
	x.RecordRun(NewTraceID(), "t", "r", "w", "v", "succeeded", time.Now(), time.Now()) // must not panic
}
