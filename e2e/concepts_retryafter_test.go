package e2e

import (
	"testing"
	"time"
)

// TestWebhookRetryAfterOneRule: a webhook delivery reads Retry-After by the
// same rule as a step's call: seconds or an HTTP date, at most 24h. A
// number of seconds too large for a Duration once multiplied (or for an
// int64 at all) asks for the longest wait, not for none.
func TestWebhookRetryAfterOneRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, value string }{
		{"overflowing seconds", "9223372037"},
		{"seconds beyond int64", "99999999999999999999"},
		{"a day and more", "100000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "hook-ra-rule")
			srv := newScriptServer(t)
			srv.script("/busy", reply{Status: 503, Headers: map[string]string{"Retry-After": tc.value}, Body: "busy"}, reply{Status: 200, Body: "ok"})
			hookEndpoint(t, f.owner, srv.URL+"/busy", "run.succeeded")
			_, first := hookSucceededRun(t, f.owner, f, srv, "/busy")

			// The attempt and its next due time commit together: once the
			// first attempt is recorded, the wait is decided.
			deadline := time.Now().Add(hookWait)
			var d map[string]any
			for {
				if list := hookDeliveries(t, f.owner, map[string]any{"webhookID": first.ID}); len(list) == 1 {
					d = list[0]
					if a, _ := d["attemptList"].([]any); len(a) > 0 {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("delivery %s has no recorded attempt within %s: %v", first.ID, hookWait, d)
				}
				time.Sleep(50 * time.Millisecond)
			}
			a := d["attemptList"].([]any)[0]
			at, err1 := time.Parse(time.RFC3339Nano, str(a, "createdAt"))
			next, err2 := time.Parse(time.RFC3339Nano, str(a, "nextAttemptAt"))
			if err1 != nil || err2 != nil {
				t.Fatalf("attempt times: %v", a)
			}
			if wait := next.Sub(at); wait < 23*time.Hour || wait > 25*time.Hour {
				t.Fatalf("Retry-After: %s: next attempt %s after the first, want 24h (the cap)", tc.value, wait)
			}
			if d["status"] != "pending" || d["attempts"] != float64(1) {
				t.Fatalf("delivery after a 503 asking for a day: %v", d)
			}
		})
	}
}
