// Package retryafter reads a server's Retry-After header: the one rule by
// which a step's call and a webhook delivery honour how long the receiver
// asked them to wait. Which statuses it is honoured on stays with each
// caller.
package retryafter

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Max bounds what a server can ask for, so a hostile or broken Retry-After
// cannot park a run or a delivery for years (or overflow a Duration).
const Max = 24 * time.Hour

// Parse reads a Retry-After value (RFC 9110 section 10.2.3): delay-seconds
// or an HTTP date, relative to now. The wait is capped at Max. Zero or
// negative seconds, a date not after now, an empty value and anything else
// mean no wait asked: 0.
func Parse(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	// Out of int64's range, ParseInt gives its closest bound: a huge
	// number of seconds is still a wait, capped below.
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs <= 0 {
			return 0
		}
		// Compared in seconds: secs * time.Second could overflow.
		return time.Duration(min(secs, int64(Max/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), Max)
	}
	return 0
}

// FromHeader is Parse of h's Retry-After.
func FromHeader(h http.Header, now time.Time) time.Duration {
	return Parse(h.Get("Retry-After"), now)
}

// resetHeaders are the rate-limit reset headers APIs send besides
// Retry-After, in the order they are read: the IETF draft's RateLimit-Reset
// (seconds) and the common X- forms (seconds, or a Unix time).
var resetHeaders = []string{"RateLimit-Reset", "X-RateLimit-Reset", "X-Rate-Limit-Reset", "X-RateLimit-Reset-After"}

// unixFrom is the smallest value read as a Unix time rather than a delay
// in seconds (2001-09-09): no API asks for a 30-year wait.
const unixFrom = 1_000_000_000

// Cooldown is how long a server that refused a call (a 429 or 503) asked
// every caller to wait: Retry-After when it is set, otherwise a rate-limit
// reset header, whose value is a delay in seconds (fractions allowed) or a
// Unix time in seconds or milliseconds. Capped at Max; 0 when nothing
// usable is there.
func Cooldown(h http.Header, now time.Time) time.Duration {
	if d := FromHeader(h, now); d > 0 {
		return d
	}
	for _, name := range resetHeaders {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f != f {
			continue
		}
		var d time.Duration
		switch {
		case f >= unixFrom*1000: // Unix milliseconds
			d = time.UnixMilli(int64(f)).Sub(now)
		case f >= unixFrom: // Unix seconds
			d = time.Unix(int64(f), 0).Sub(now)
		case f >= float64(Max/time.Second):
			d = Max
		default:
			d = time.Duration(f * float64(time.Second))
		}
		if d > 0 {
			return min(d, Max)
		}
	}
	return 0
}
