package dispatch

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// scripted is a Store whose releases report on calls and return the counts
// given to them on replies, one per call.
type scripted struct {
	calls   chan string // "held" or "limits", as each release begins
	replies chan int
}

func (s *scripted) ReleaseHeld(context.Context, string) (int, error) {
	s.calls <- "held"
	return <-s.replies, nil
}

func (s *scripted) ReleaseLimits(context.Context, string) (int, error) {
	s.calls <- "limits"
	return <-s.replies, nil
}

func (s *scripted) HeldTenants(context.Context) ([]string, error)    { return nil, nil }
func (s *scripted) ReleaseKeys(context.Context, string) (int, error) { return 0, nil }
func (s *scripted) ReleaseRuns(context.Context, string) (int, error) { return 0, nil }

// pacedReleaser is a Releaser over s whose clock advances 3ms per reading
// and whose pauses are reported on paused and last until resume.
func pacedReleaser(s *scripted) (r *Releaser, paused chan time.Duration, resume chan struct{}) {
	r = New(s, nil, time.Hour)
	var ticks atomic.Int64
	base := time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return base.Add(time.Duration(ticks.Add(1)) * 3 * time.Millisecond) }
	paused, resume = make(chan time.Duration), make(chan struct{})
	r.pause = func(d time.Duration) { paused <- d; <-resume }
	return r, paused, resume
}

// call waits for the next release to begin and answers it with n.
func (s *scripted) call(t *testing.T, want string, n int) {
	t.Helper()
	select {
	case got := <-s.calls:
		if got != want {
			t.Fatalf("release %q began, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s release began", want)
	}
	s.replies <- n
}

// callUnpaused waits for the next release to begin, with no pause before
// it, and answers it with n; why names the ask that must begin it.
func (s *scripted) callUnpaused(t *testing.T, paused chan time.Duration, want string, n int, why string) {
	t.Helper()
	select {
	case <-paused:
		t.Fatalf("paused before %s", why)
	case got := <-s.calls:
		if got != want {
			t.Fatalf("release %q began, want %q", got, want)
		}
		s.replies <- n
	case <-time.After(10 * time.Second):
		t.Fatalf("%s began no release", why)
	}
}

// TestReleaseThatFindsNoRoomIsPaced: a release of held steps that released
// nothing is followed by a pause as long as it took (by the Releaser's
// clock), after which the asks that came meanwhile make a release; a
// release that released steps is followed by none.
func TestReleaseThatFindsNoRoomIsPaced(t *testing.T) {
	s := &scripted{calls: make(chan string), replies: make(chan int)}
	r, paused, resume := pacedReleaser(s)

	r.Release("ten_1")
	s.call(t, "held", 0) // the queue is still more than half full
	select {
	case d := <-paused:
		if d != 3*time.Millisecond {
			t.Fatalf("paused %v, want the release's own 3ms", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no pause after a release that released nothing")
	}
	for range 5 { // step transactions asking meanwhile
		r.Release("ten_1")
	}
	resume <- struct{}{}
	s.call(t, "held", 4) // the asks' release; it releases steps

	// No pause after it: the next ask begins a release at once.
	r.Release("ten_1")
	s.callUnpaused(t, paused, "held", 2, "the ask after a release that released steps")
}

// TestNamedLimitReleasesAreNotPaced: releases for named limits, which a
// step leaving a limit asks for, are not paced even when they release
// nothing.
func TestNamedLimitReleasesAreNotPaced(t *testing.T) {
	s := &scripted{calls: make(chan string), replies: make(chan int)}
	r, paused, _ := pacedReleaser(s)
	r.ReleaseLimits("ten_1")
	s.call(t, "limits", 0)
	r.ReleaseLimits("ten_1")
	s.callUnpaused(t, paused, "limits", 0, "the second named limits ask")
}
