package definition

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func problemPaths(t *testing.T, doc string) []string {
	t.Helper()
	_, err := Parse([]byte(doc))
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("not a ValidationError: %v", err)
	}
	var out []string
	for _, p := range ve.Problems {
		out = append(out, p.Path)
	}
	return out
}

func oneStep(step string) string { return `{"schemaVersion":1,"steps":[` + step + `]}` }

func httpStep(extra string) string {
	return oneStep(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example/"}` + extra + `}`)
}

func TestBoundsRefused(t *testing.T) {
	for _, tt := range []struct{ name, doc, path string }{
		{"maxInterval of centuries", httpStep(`,"retry":{"maxInterval":"2000000h"}`), "$.steps[0].retry.maxInterval"},
		{"initialInterval over 24h", httpStep(`,"retry":{"initialInterval":"25h","maxInterval":"24h"}`), "$.steps[0].retry.initialInterval"},
		{"coefficient over 10", httpStep(`,"retry":{"backoffCoefficient":10.5}`), "$.steps[0].retry.backoffCoefficient"},
		{"span over 7 days", httpStep(`,"retry":{"maxAttempts":9,"initialInterval":"24h","maxInterval":"24h"}`), "$.steps[0].retry.maxAttempts"},
		{"CR in header value", httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"X-A":"a\rb"}}`), "$.steps[0].request.headers['X-A']"},
		{"NUL in header value", httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"X-A":"a\u0000b"}}`), "$.steps[0].request.headers['X-A']"},
		{"header name with LF", httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"X\nA":"1"}}`), "$.steps[0].request.headers"},
		{"header name with slash", httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"X/A":"1"}}`), "$.steps[0].request.headers"},
		{"empty header name", httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"":"1"}}`), "$.steps[0].request.headers"},
		{"viewer approver", oneStep(`{"id":"a","type":"approval","approvers":{"roles":["viewer"]}}`), "$.steps[0].approvers.roles[0]"},
		{"unknown approver", oneStep(`{"id":"a","type":"approval","approvers":{"roles":["admin","billing"]}}`), "$.steps[0].approvers.roles[1]"},
		{"delivery without sideEffect", httpStep(`,"delivery":"at_most_once"`), "$.steps[0].delivery"},
		{"unknown delivery", httpStep(`,"sideEffect":true,"delivery":"once"`), "$.steps[0].delivery"},
		{"onUncertain without at_most_once", httpStep(`,"sideEffect":true,"onUncertain":"ask"`), "$.steps[0].onUncertain"},
		{"unknown onUncertain", httpStep(`,"sideEffect":true,"delivery":"at_most_once","onUncertain":"retry"`), "$.steps[0].onUncertain"},
		{"delivery on approval", oneStep(`{"id":"a","type":"approval","approvers":{"roles":["operator"]},"delivery":"at_most_once"}`), "$.steps[0].delivery"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			paths := problemPaths(t, tt.doc)
			if len(paths) == 0 {
				t.Fatalf("accepted")
			}
			if tt.path != "" && !strings.Contains(strings.Join(paths, " "), tt.path) {
				t.Errorf("problems at %v, want %s", paths, tt.path)
			}
		})
	}
}

func TestBoundsAccepted(t *testing.T) {
	for _, doc := range []string{
		httpStep(`,"retry":{"maxAttempts":8,"initialInterval":"24h","maxInterval":"24h","backoffCoefficient":10}`),
		httpStep(`,"retry":{"maxAttempts":100,"initialInterval":"1s","maxInterval":"1h"}`),
		httpStep(`,"request":{"method":"POST","url":"https://x.example/","headers":{"X-Trace_Id.v2~":"{{ run.id }}","Accept":"text/plain;\tq=0.9"}}`),
		httpStep(`,"sideEffect":true,"delivery":"at_most_once","onUncertain":"ask"`),
		httpStep(`,"sideEffect":true,"delivery":"at_least_once"`),
		oneStep(`{"id":"a","type":"llm","model":"m","sideEffect":true,"delivery":"at_most_once","messages":[{"role":"user","content":"hi"}]}`),
		oneStep(`{"id":"a","type":"approval","approvers":{"roles":["owner","admin","editor","operator"]}}`),
	} {
		if paths := problemPaths(t, doc); len(paths) > 0 {
			t.Errorf("refused at %v: %s", paths, doc)
		}
	}
}

func TestWorstCaseSpan(t *testing.T) {
	p := RetryPolicy{MaxAttempts: 5, InitialInterval: Duration{time.Second}, MaxInterval: Duration{4 * time.Second}, BackoffCoefficient: 2}
	if got, want := p.WorstCaseSpan(), (1+2+4+4)*time.Second; got != want {
		t.Errorf("span = %s, want %s", got, want)
	}
	huge := RetryPolicy{MaxAttempts: 100, InitialInterval: Duration{time.Hour}, MaxInterval: Duration{time.Duration(1 << 62)}, BackoffCoefficient: 1e300}
	if huge.WorstCaseSpan() <= 0 {
		t.Error("span overflowed")
	}
}

// TestParseStoredKeepsOldVersionsRunning: a version published before the
// bounds existed still parses for running, and its backoff is clamped.
func TestParseStoredKeepsOldVersionsRunning(t *testing.T) {
	doc := oneStep(`{"id":"a","type":"http","request":{"method":"POST","url":"https://x.example/","headers":{"X A":"1"}},
		"retry":{"maxAttempts":3,"initialInterval":"1000000h","maxInterval":"2000000h"}}`)
	if _, err := Parse([]byte(doc)); err == nil {
		t.Fatal("Parse accepted it")
	}
	d, err := ParseStored([]byte(doc))
	if err != nil {
		t.Fatalf("ParseStored: %v", err)
	}
	if b := d.Steps[0].RetryPolicy().Backoff(2, nil); b > MaxRetryInterval {
		t.Errorf("backoff %s exceeds %s", b, MaxRetryInterval)
	}
	// Rules that predate the bounds still apply.
	if _, err := ParseStored([]byte(httpStep(`,"retry":{"initialInterval":"2m","maxInterval":"1m"}`))); err == nil {
		t.Error("ParseStored accepted initialInterval > maxInterval")
	}
}
