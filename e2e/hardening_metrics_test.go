package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Operation metrics carry no client-chosen label values, and /metrics is
// served on its own address, not on the API port.

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestMetricsBoundedLabelsOnOwnAddress(t *testing.T) {
	t.Parallel()
	tenantID := newTenant(t, "metrics")
	c := newClient(t, 1, token(t, tenantID, "viewer"))
	prefix := "ClientChosen" + randHex(4)
	for i := range 50 {
		c.ok(fmt.Sprintf(`query %s_%d { viewer { subject } }`, prefix, i), nil)
	}
	c.fail("VALIDATION", `query `+prefix+`_bad { noSuchField }`, nil)

	p := server(1)
	if code, body := httpGet(t, p.url+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics on the API port: status %d, want 404 (%d bytes)", code, len(body))
	}
	if p.metricsURL == "" {
		t.Fatal("the API process announced no metrics address")
	}
	code, body := httpGet(t, p.metricsURL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics on the metrics address: status %d", code)
	}
	if strings.Contains(body, prefix) {
		t.Fatalf("/metrics holds client-chosen operation names (%s...)", prefix)
	}
	for _, want := range []string{
		`sluice_graphql_operation_duration_seconds_count{field="viewer",type="query"}`,
		`sluice_graphql_operation_errors_total{`,
		`sluice_http_request_duration_seconds_count{`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
