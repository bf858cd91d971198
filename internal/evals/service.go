// Package evals owns evaluations: a candidate (a published version of a
// workflow, or its current version with model overrides) replayed in
// SANDBOX mode on a dataset of recorded runs frozen at creation, each
// example scored against the recorded output. It creates and validates
// evaluations (the control side), drives them from Postgres in the worker
// (the driver: a singleton loop that starts replays up to the
// evaluation's concurrency, collects finished ones, scores them, enforces
// the budget and completes the evaluation), and tells the run state
// machine how an evaluation's replays call out (runs.SandboxPlanner). It
// is a neighbour of the state machine: it starts replays through
// runs.Service and the state machine never imports it.
package evals

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/webhook"
)

// EventRecorder writes a tenant event's webhook deliveries in the caller's
// transaction (webhook.Service.RecordEvent).
type EventRecorder interface {
	RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev webhook.Event, now time.Time) ([]string, error)
}

// Publisher tells live subscribers (evaluationUpdated) that an evaluation
// changed; called after commit. Best effort.
type Publisher interface {
	PublishEvaluation(ctx context.Context, tenantID, evaluationID, status string)
}

// Options configure a Service.
type Options struct {
	Client    *ent.Client // the app role's pool, for the driver's transactions
	Runs      *runs.Service
	Events    EventRecorder
	Publisher Publisher    // optional
	Log       *slog.Logger // if nil, slog.Default()
	// Now is the clock; if nil, the UTC wall clock truncated to microseconds.
	Now func() time.Time
	// Interval is how often the driver looks at open evaluations. If
	// zero, 1s (SLUICE_EVAL_INTERVAL).
	Interval time.Duration
	// Vault opens the credentials of JUDGE scorers and Models asks their
	// model; without them a JUDGE scorer's examples end in ERROR.
	Vault  *vault.Vault
	Models ModelCaller
}

// ModelCaller asks a model as an llm step would (internal/steps.Executor).
type ModelCaller interface {
	LLM(ctx context.Context, req steps.Request) (*steps.Result, error)
}

// Service is the evaluations room's door.
type Service struct {
	o     Options
	log   *slog.Logger
	plans sync.Map // evaluation id -> *plan (an evaluation never changes what it replays)
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	return &Service{o: o, log: o.Log}
}

// SetPublisher sets the live publisher of evaluation changes.
func (s *Service) SetPublisher(p Publisher) { s.o.Publisher = p }

func (s *Service) now() time.Time { return s.o.Now() }
