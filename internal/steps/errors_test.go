package steps_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/steps"
)

func TestClassify(t *testing.T) {
	if steps.Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
	own := &steps.Error{Class: steps.Budget, Message: "over budget"}
	for _, tc := range []struct {
		err  error
		want steps.Class
	}{
		{fmt.Errorf("wrapped: %w", own), steps.Budget},
		{context.Canceled, steps.Cancelled},
		{fmt.Errorf("call: %w", context.DeadlineExceeded), steps.Transient},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, steps.Transient},
		{&net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: 10.0.0.1", egress.ErrDenied)}, steps.Permanent},
		{&net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}, steps.Permanent},
		{&net.DNSError{Err: "server misbehaving", Name: "x.example", IsTemporary: true}, steps.Transient},
		{errors.New("something odd"), steps.Permanent},
	} {
		if got := steps.Classify(tc.err); got.Class != tc.want {
			t.Errorf("Classify(%v) = %s, want %s", tc.err, got.Class, tc.want)
		}
	}
	if got := steps.Classify(own); got != own {
		t.Error("an *Error is not returned as it is")
	}
}
