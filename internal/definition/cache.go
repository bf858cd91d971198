package definition

import "time"

// Caps on an http step's cache policy: a response is never served fresher
// than MaxCacheTTL allows, nor stale beyond MaxStaleIfError.
const (
	MaxCacheTTL     = 24 * time.Hour
	MaxStaleIfError = 7 * 24 * time.Hour
)

// CachePolicy is an http step's `cache`: a response stays fresh for TTL
// and, once expired, may still stand in for a call that fails transiently
// for StaleIfError more (RFC 5861's stale-if-error).
type CachePolicy struct {
	TTL          Duration `json:"ttl"`
	StaleIfError Duration `json:"staleIfError,omitzero"`
}

// checkCache refuses a cache on anything but a read-only http step, and
// durations that are not positive or exceed the caps.
func (v *validator) checkCache(path string, s *Step) {
	c := s.Cache
	if c == nil {
		return
	}
	path += ".cache"
	switch {
	case s.Type != StepHTTP:
		v.add(path, "cache applies only to http steps")
		return
	case s.SideEffect:
		v.add(path, "cache applies only to steps without sideEffect: a side effect must reach the receiver every time")
		return
	}
	if c.TTL.Duration <= 0 {
		v.add(path+".ttl", "ttl must be a positive duration such as \"60s\"")
	} else if c.TTL.Duration > MaxCacheTTL {
		v.add(path+".ttl", "ttl %s exceeds the maximum of %s", fmtDuration(c.TTL.Duration), fmtDuration(MaxCacheTTL))
	}
	if c.StaleIfError.Duration < 0 {
		v.add(path+".staleIfError", "staleIfError must not be negative")
	} else if c.StaleIfError.Duration > MaxStaleIfError {
		v.add(path+".staleIfError", "staleIfError %s exceeds the maximum of %s", fmtDuration(c.StaleIfError.Duration), fmtDuration(MaxStaleIfError))
	}
}
