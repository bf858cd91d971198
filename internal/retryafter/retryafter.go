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
