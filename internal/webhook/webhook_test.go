package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"
)

// verify is the receiver's side, written from the specification.
func verify(secret, id, ts string, body []byte, header string) bool {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, sig := range strings.Split(header, " ") {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

func TestSignAndRotation(t *testing.T) {
	oldS, newS := NewSecret(), NewSecret()
	ts := time.Unix(1_700_000_000, 0)
	body := []byte(`{"type":"run.succeeded"}`)
	h, err := Headers("msg_1", ts, body, newS, oldS)
	if err != nil {
		t.Fatal(err)
	}
	if h["webhook-timestamp"] != "1700000000" || h["webhook-id"] != "msg_1" {
		t.Fatalf("headers: %v", h)
	}
	for _, s := range []string{oldS, newS} {
		if !verify(s, "msg_1", "1700000000", body, h["webhook-signature"]) {
			t.Fatalf("signature does not verify with %s", s[:10])
		}
	}
	if verify(NewSecret(), "msg_1", "1700000000", body, h["webhook-signature"]) {
		t.Fatal("a foreign secret verifies")
	}
	if verify(newS, "msg_1", "1700000000", []byte(`{"type":"run.failed"}`), h["webhook-signature"]) {
		t.Fatal("a changed body verifies")
	}
	if _, err := Sign("x", ts, body, "nope"); err == nil {
		t.Fatal("malformed secret accepted")
	}
}

func TestScheduleAndClassify(t *testing.T) {
	if d, ok := NextDelay(1, 1, 0); !ok || d < 4500*time.Millisecond || d > 5500*time.Millisecond {
		t.Fatalf("second attempt delay %v", d)
	}
	if d, _ := NextDelay(1, 0.001, 3*time.Second); d != 3*time.Second {
		t.Fatalf("Retry-After not honoured: %v", d)
	}
	if _, ok := NextDelay(MaxAttempts, 1, 0); ok {
		t.Fatal("no exhaustion after the last attempt")
	}
	for status, want := range map[int]Outcome{200: Delivered, 204: Delivered, 302: Retry, 410: Gone, 429: Retry, 500: Retry, 0: Retry} {
		if got := Classify(status); got != want {
			t.Errorf("Classify(%d) = %v, want %v", status, got, want)
		}
	}
	h := http.Header{"Retry-After": []string{"7"}}
	if d := RetryAfter(503, h, time.Now()); d != 7*time.Second {
		t.Fatalf("Retry-After 503: %v", d)
	}
	if d := RetryAfter(400, h, time.Now()); d != 0 {
		t.Fatalf("Retry-After honoured on 400: %v", d)
	}
}

// Every delay of the Standard Webhooks schedule stays within 10% of its
// entry (scaled), the first retry included; nothing is due after the last.
func TestNextDelayFollowsTheSchedule(t *testing.T) {
	for _, scale := range []float64{1, 0.001} {
		for n := 1; n < MaxAttempts; n++ {
			want := time.Duration(float64(Schedule[n]) * scale)
			for range 200 {
				d, ok := NextDelay(n, scale, 0)
				if !ok || d < want-want/10 || d > want+want/10 {
					t.Fatalf("scale %v: NextDelay(%d) = %v, %v; want within 10%% of %v", scale, n, d, ok, want)
				}
			}
		}
		if _, ok := NextDelay(MaxAttempts, scale, 0); ok {
			t.Fatalf("scale %v: a delay after the last attempt", scale)
		}
	}
	if got := []time.Duration{Schedule[1], Schedule[2], Schedule[9]}; got[0] != 5*time.Second || got[1] != 5*time.Minute || got[2] != 24*time.Hour || MaxAttempts != 10 {
		t.Fatalf("schedule changed: %v, %d attempts", Schedule, MaxAttempts)
	}
	// A Retry-After longer than the jittered delay wins.
	if d, _ := NextDelay(2, 1, time.Hour); d != time.Hour {
		t.Fatalf("NextDelay with Retry-After 1h = %v", d)
	}
}
