package e2e

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpCollector is a minimal OTLP/HTTP trace receiver.
type otlpCollector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *otlpCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (c *otlpCollector) forTrace(traceID string) []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range c.spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			out = append(out, s)
		}
	}
	return out
}

// TestRunExportedAsTrace runs a workflow on processes exporting to a local
// OTLP collector: the run's stored trace id names a trace holding the run
// span and one child span per step attempt.
func TestRunExportedAsTrace(t *testing.T) {
	t.Parallel()
	col := &otlpCollector{}
	srv := httptest.NewServer(col)
	t.Cleanup(srv.Close)
	st := newIsolatedStack(t, 1, "SLUICE_OTLP_ENDPOINT="+srv.URL)
	api, w := st.server, st.workers[0]
	f := st.fixture(t, "trace")
	c := f.owner.on(api)
	wf, _ := deployWorkflow(t, f, "traced", simpleDefinition())
	id := str(c.ok(mStartRun, map[string]any{"w": wf, "e": f.envID, "i": map[string]any{"name": "ada"}}), "startRun.id")
	waitRun(t, c, id, 30*time.Second, "succeeded")
	traceID := str(c.ok(`query($id: ID!) { node(id: $id) { ... on Run { traceID } } }`, map[string]any{"id": id}), "node.traceID")
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(traceID) {
		t.Fatalf("trace id %q", traceID)
	}
	w.stop() // flushes the exporter
	var spans []*tracepb.Span
	eventually(t, 30*time.Second, func() (bool, string) {
		spans = col.forTrace(traceID)
		return len(spans) >= 3, fmt.Sprintf("%d spans of trace %s", len(spans), traceID)
	})
	names := map[string]*tracepb.Span{}
	for _, s := range spans {
		names[s.Name] = s
	}
	run, greet, shout := names["run "+id], names["step greet"], names["step shout"]
	if run == nil || greet == nil || shout == nil {
		t.Fatalf("spans of trace %s: %v", traceID, names)
	}
	for _, s := range []*tracepb.Span{greet, shout} {
		if string(s.ParentSpanId) != string(run.SpanId) {
			t.Fatalf("span %q is not a child of the run span", s.Name)
		}
		if s.EndTimeUnixNano < s.StartTimeUnixNano {
			t.Fatalf("span %q ends before it starts", s.Name)
		}
	}
}
