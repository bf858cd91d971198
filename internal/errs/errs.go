// Package errs defines Sluice's domain errors: a code clients can act on and a
// message that is safe to show. Anything else reaching the API boundary is
// INTERNAL.
package errs

import (
	"errors"
	"fmt"
)

// Code is the machine-readable class of an error (GraphQL extensions.code).
type Code string

const (
	Unauthenticated Code = "UNAUTHENTICATED"
	Forbidden       Code = "FORBIDDEN"
	NotFound        Code = "NOT_FOUND"
	Validation      Code = "VALIDATION"
	Conflict        Code = "CONFLICT"
	RateLimited     Code = "RATE_LIMITED"
	// Unavailable means a dependency (Postgres, Redis) cannot be reached:
	// nothing was done and the same request may be retried (HTTP 503 with
	// Retry-After).
	Unavailable Code = "UNAVAILABLE"
	Internal    Code = "INTERNAL"
)

// Problem is one validation failure at a path of the input.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Error is a domain error.
type Error struct {
	Code     Code
	Message  string
	Problems []Problem
	Err      error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// E makes an error with a code and a formatted message.
func E(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// NotFoundf is the error for a missing object. Objects of another tenant are
// reported exactly the same way.
func NotFoundf(kind, id string) *Error {
	return &Error{Code: NotFound, Message: fmt.Sprintf("%s %q not found", kind, id)}
}

// Invalid is a validation error at one path.
func Invalid(path, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: Validation, Message: path + ": " + msg, Problems: []Problem{{Path: path, Message: msg}}}
}

// InvalidAll is a validation error listing several problems.
func InvalidAll(summary string, problems []Problem) *Error {
	return &Error{Code: Validation, Message: summary, Problems: problems}
}

// CodeOf returns the code of err, Internal when it carries none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// As returns err as *Error when it is one.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
