// Package sla owns service levels: SLA policies (objectives per scope, the
// most specific policy winning per objective), the deadlines of new runs,
// the sweep that finds runs and approvals past a deadline while they are
// still open, the evaluation of window objectives from SQL aggregates, and
// the incidents breaches open. It is a neighbour of the run state machine:
// it reads runs through SQL of its own and gives the state machine
// deadlines through runs.SLA; the state machine never imports it.
package sla

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Escalator pages people about incidents; internal/escalation implements it. nil: incidents do not escalate.
type Escalator interface {
	IncidentOpened(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, now time.Time) error
	IncidentAcknowledged(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, by string, now time.Time) error
	IncidentResolved(ctx context.Context, c *ent.Client, tenantID string, inc *ent.Incident, by string, now time.Time) error
	// PolicyExists reports whether an escalation policy with this id is visible in c's tenant.
	PolicyExists(ctx context.Context, c *ent.Client, id string) (bool, error)
}

// EventRecorder writes a tenant event's webhook deliveries in the caller's
// transaction (webhook.Service.RecordEvent).
type EventRecorder interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// IncidentPublisher tells live subscribers (incidentUpdated) that an
// incident changed; called after commit. Best effort.
type IncidentPublisher interface {
	PublishIncident(ctx context.Context, tenantID, incidentID, status string)
}

// Options configure a Service.
type Options struct {
	Client    *ent.Client // the app role's pool, for the sweep's transactions
	Events    EventRecorder
	Escalator Escalator         // optional
	Publisher IncidentPublisher // optional
	Log       *slog.Logger      // if nil, slog.Default()
	// Now is the clock of deadlines, sweeps and incidents. If nil, the UTC
	// wall clock truncated to microseconds.
	Now func() time.Time
	// SweepInterval is how often the sweep looks for runs and approvals
	// past a deadline. If zero, 5s (SLUICE_SLA_SWEEP_INTERVAL).
	SweepInterval time.Duration
	// WindowInterval is how often window objectives are evaluated. If
	// zero, 1m (SLUICE_SLA_WINDOW_INTERVAL).
	WindowInterval time.Duration
	// Batch bounds the runs (and approvals) one sweep statement reads per
	// tenant. If zero, 500.
	Batch int
}

// Service is the SLA room's door.
type Service struct {
	o        Options
	log      *slog.Logger
	policies sync.Map // tenant id -> policySet
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 5 * time.Second
	}
	if o.WindowInterval <= 0 {
		o.WindowInterval = time.Minute
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	return &Service{o: o, log: o.Log}
}

// SetEscalator sets the escalator (wired after both services exist).
func (s *Service) SetEscalator(e Escalator) { s.o.Escalator = e }

// SetPublisher sets the live publisher of incident changes.
func (s *Service) SetPublisher(p IncidentPublisher) { s.o.Publisher = p }

func (s *Service) now() time.Time { return s.o.Now() }
