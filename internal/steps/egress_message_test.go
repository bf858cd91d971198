package steps_test

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/steps"
)

// TestEgressRefusalNamesHostNotAddress: an http step aimed at a name that
// resolves to a disallowed address fails permanently with a message that
// names the host and says why, but never quotes the internal address the
// name resolved to (that would map a tenant's view of the private network).
func TestEgressRefusalNamesHostNotAddress(t *testing.T) {
	// localhost resolves to 127.0.0.1; port 80 is allowed, the address is not.
	target := "http://localhost/x"
	x := steps.NewExecutor(egress.NewClient(egress.Config{}))
	res, err := x.HTTP(context.Background(), steps.Request{
		RunID: "run_1", StepID: "call",
		Step: step(t, `{"id":"call","type":"http","request":{"method":"POST","url":"`+target+`"}}`),
		Env:  definition.Env{},
	})
	e := stepError(t, err)
	if e.Class != steps.Permanent {
		t.Errorf("class %s, want permanent", e.Class)
	}
	for _, leak := range []string{"127.0.0.1", "::1", "[::1]"} {
		if strings.Contains(e.Message, leak) {
			t.Errorf("message quotes the resolved address %s: %q", leak, e.Message)
		}
		if res != nil && len(res.Calls) > 0 && strings.Contains(res.Calls[0].Error, leak) {
			t.Errorf("recorded call error quotes %s: %q", leak, res.Calls[0].Error)
		}
	}
	if !strings.Contains(e.Message, "localhost") || !strings.Contains(e.Message, "disallowed address") {
		t.Errorf("message should name the host and say it resolves to a disallowed address: %q", e.Message)
	}
}
