package retryafter_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/retryafter"
)

func TestParse(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"120", 2 * time.Minute},
		{"86400", 24 * time.Hour},
		{"86401", retryafter.Max},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"1.5", 0},
		{"7s", 0},
		// secs * time.Second overflows int64: still the cap, never a
		// negative or wrapped wait.
		{"9223372037", retryafter.Max},
		{"9223372036854775807", retryafter.Max},
		{"99999999999999999999", retryafter.Max},
		{"-99999999999999999999", 0},
		{date(90 * time.Second), 90 * time.Second},
		{date(48 * time.Hour), retryafter.Max},
		{date(-time.Hour), 0},
		{date(0), 0},
		{"Fri, 27 Nov 2026 12:00:30 GMT", 30 * time.Second},
		{"Friday, 27-Nov-26 12:00:30 GMT", 30 * time.Second}, // RFC 850, accepted by HTTP
		{"Fri Nov 27 12:00:30 2026", 30 * time.Second},       // asctime
	} {
		if got := retryafter.Parse(tc.v, now); got != tc.want {
			t.Errorf("Parse(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestFromHeader(t *testing.T) {
	now := time.Now()
	if d := retryafter.FromHeader(http.Header{"Retry-After": {"3"}}, now); d != 3*time.Second {
		t.Errorf("FromHeader = %v", d)
	}
	if d := retryafter.FromHeader(http.Header{}, now); d != 0 {
		t.Errorf("FromHeader without the header = %v", d)
	}
}

func TestCooldown(t *testing.T) {
	now := time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC)
	cases := []struct {
		name, header, value string
		want                time.Duration
	}{
		{"retry-after wins", "Retry-After", "3", 3 * time.Second},
		{"draft reset seconds", "RateLimit-Reset", "7", 7 * time.Second},
		{"x reset delta", "X-RateLimit-Reset", "1.5", 1500 * time.Millisecond},
		{"x reset unix seconds", "X-RateLimit-Reset", strconv.FormatInt(now.Add(20*time.Second).Unix(), 10), 20 * time.Second},
		{"x reset unix millis", "X-RateLimit-Reset", strconv.FormatInt(now.Add(2500*time.Millisecond).UnixMilli(), 10), 2500 * time.Millisecond},
		{"reset in the past", "X-RateLimit-Reset", strconv.FormatInt(now.Add(-time.Minute).Unix(), 10), 0},
		{"garbage", "X-RateLimit-Reset", "soon", 0},
		{"huge delta capped", "RateLimit-Reset", "999999999", retryafter.Max},
		{"nothing", "X-Other", "5", 0},
	}
	for _, c := range cases {
		h := http.Header{}
		h.Set(c.header, c.value)
		if got := retryafter.Cooldown(h, now); got != c.want {
			t.Errorf("%s: Cooldown(%s: %s) = %s, want %s", c.name, c.header, c.value, got, c.want)
		}
	}
}
