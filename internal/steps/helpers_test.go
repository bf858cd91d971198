package steps_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/steps"
)

var allowLoopback = egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

func newExecutor() *steps.Executor {
	return steps.NewExecutor(egress.NewClient(allowLoopback))
}

func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// step decodes a step the way the definition package does.
func step(t *testing.T, js string) *definition.Step {
	t.Helper()
	var s definition.Step
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("decode step: %v", err)
	}
	return &s
}

func stepError(t *testing.T, err error) *steps.Error {
	t.Helper()
	var e *steps.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *steps.Error", err, err)
	}
	return e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
