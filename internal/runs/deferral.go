package runs

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
)

// Deferrals: an attempt whose call must wait (a rate limit's slot, an
// upstream's cooldown; steps.Deferral) is not a failure and spends no retry
// attempt. The same attempt is rescheduled at the wait's end:
//
//   - the step stays queued with ready_at = until, durable in Postgres like
//     a retry's backoff (the reconciler resends it if its wake-up is lost);
//   - the attempt row keeps its id and number and goes back to queued with
//     scheduled_at = until and no start; the step's `attempts` does not move;
//   - the trace shows the wait as a step.waiting event {reason, until, cause,
//     scope, statusCode, calls} (calls: when the upstream refused the call,
//     what was sent; a wait decided before sending has none);
//   - a wake-up task of its own ("d" variant): the attempt's own task id is
//     still in use by the delivery that is deferring it.
//
// The total wait is capped (SetMaxDeferral, from the step's first start):
// past it the deferral is the transient failure it wraps, and the step's
// retry policy decides. An at_most_once step whose call the upstream
// refused (429 or 503) is not deferred either: its send is recorded, and
// its failure is settled as at_most_once failures are. Its waits decided
// before sending are deferred like any step's.

// DefaultMaxDeferral bounds how long a step may wait for rate limits.
const DefaultMaxDeferral = 24 * time.Hour

var maxDeferral atomic.Int64

func init() { maxDeferral.Store(int64(DefaultMaxDeferral)) }

// SetMaxDeferral sets how long, from its first start, a step may wait for
// rate limits before a wait is a transient failure (SLUICE_RATE_LIMIT_MAX_WAIT).
// Zero or negative: DefaultMaxDeferral.
func SetMaxDeferral(d time.Duration) {
	if d <= 0 {
		d = DefaultMaxDeferral
	}
	maxDeferral.Store(int64(d))
}

// deferralOf is the steps.Deferral in err, if any.
func deferralOf(err error) *steps.Deferral {
	var d *steps.Deferral
	if errors.As(err, &d) {
		return d
	}
	return nil
}

// deferAttempt reschedules j's attempt at d.Until if the step may still
// wait; it reports whether it did (then the run is flushed).
func (s *runState) deferAttempt(ctx context.Context, j *job, sr *ent.StepRun, d *steps.Deferral, calls []map[string]any) (bool, error) {
	since := j.started
	if sr.StartedAt != nil {
		since = *sr.StartedAt
	}
	if s.terminal() || d.Until.Sub(since) > time.Duration(maxDeferral.Load()) {
		return false, nil
	}
	if d.StatusCode != 0 && j.step.AtMostOnce() {
		// Its send is recorded (sent_at): the refusal is settled as an
		// at_most_once failure, never sent again by a deferral.
		return false, nil
	}
	until := d.Until.UTC()
	if until.Before(s.now) {
		until = s.now
	}
	if err := s.setAttempt(ctx, j.attemptID, changeAttempt().SetStatus(stepattempt.StatusQueued).setScheduledAt(until).clearStartedAt(), 1); err != nil {
		return false, err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusQueued).SetReadyAt(until)); err != nil {
		return false, err
	}
	t := stepTask(s.run.TenantID, s.run.ID, sr.StepID, sr.Type, j.attemptID, until)
	t.VersionID = s.run.VersionID
	t.Variant = "d" + strconv.FormatInt(until.UnixMilli(), 36)
	s.tasks = append(s.tasks, t)
	data := map[string]any{"reason": d.Reason, "until": until.Format(time.RFC3339Nano), "cause": d.Cause, "scope": d.Scope, "attemptID": j.attemptID}
	if d.StatusCode != 0 {
		data["statusCode"] = d.StatusCode
	}
	if d.StatusCode != 0 && len(calls) > 0 {
		data["calls"] = calls // what was sent, and refused
	}
	s.emit(eventtype.StepWaiting, j.step.ID, j.attempt, data)
	return true, s.flush(ctx)
}

func (u *attemptChange) setScheduledAt(v time.Time) *attemptChange {
	u.set("scheduled_at", v)
	return u
}

func (u *attemptChange) clearStartedAt() *attemptChange {
	u.set("started_at", nil)
	return u
}
