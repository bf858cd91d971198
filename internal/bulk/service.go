// Package bulk owns bulk triage: one operator action (cancel, resume or
// replay) over many runs, chosen by ids or by a filter (workflow,
// environment, status, failure class, failed step, version, creation
// window). It validates the request and either counts the runs (dryRun)
// or fixes them as a BulkOperation with one item per run (the control
// side, audited); and it runs the processor in the workers: a singleton
// loop that acts on pending items at a bounded rate, each in the
// transaction that settles its item, so a run is acted on at most once
// per operation whatever the crashes and Redis wipes. It is a neighbour
// of the state machine: it acts through runs.Service, and the state
// machine never imports it.
package bulk

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/runs"
)

// Limits.
const (
	// LargeThreshold: a filter that takes more runs than this needs
	// confirmLarge.
	LargeThreshold = 10_000
	// MaxRuns bounds one operation; narrow the filter (or make several).
	MaxRuns = 100_000
	// MaxRunIDs bounds an explicit list of run ids.
	MaxRunIDs = 10_000
	// DryRunSample is how many run ids a dry run lists.
	DryRunSample = 100
	// maxTries: an item whose action fails on an unexpected error this
	// many passes is settled FAILED with the error, so that one broken run
	// does not hold its operation forever.
	maxTries = 5
)

// Publisher tells live subscribers (bulkOperationUpdated) that an
// operation changed; called after commit. Best effort.
type Publisher interface {
	PublishBulkOperation(ctx context.Context, tenantID, operationID, status string)
}

// Options configure a Service.
type Options struct {
	Client    *ent.Client // the app role's pool, for the processor's transactions
	Runs      *runs.Service
	Publisher Publisher    // optional
	Log       *slog.Logger // if nil, slog.Default()
	// Now is the clock; if nil, the UTC wall clock truncated to microseconds.
	Now func() time.Time
	// Rate is how many runs per second the processor acts on, across all
	// workers and tenants. If zero, 20 (SLUICE_BULK_RATE).
	Rate int
	// Interval is how often the processor looks for open operations when
	// none is open. If zero, 1s (SLUICE_BULK_INTERVAL).
	Interval time.Duration
}

// Service is the bulk room's door.
type Service struct {
	o   Options
	log *slog.Logger
	// turn rotates the tenant a processor pass starts with (Process).
	turn atomic.Uint64
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Rate <= 0 {
		o.Rate = 20
	}
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	return &Service{o: o, log: o.Log}
}

// SetPublisher sets the live publisher of operation changes.
func (s *Service) SetPublisher(p Publisher) { s.o.Publisher = p }

func (s *Service) now() time.Time { return s.o.Now().UTC() }

// Subject is the actor of what an operation does to runs (their audit
// entries and run events name it).
func Subject(operationID string) string { return "bulk:" + operationID }

// ReplayKey is the idempotency key of the run a REPLAY operation starts
// from a source run: a second attempt at the same item returns that run.
func ReplayKey(operationID, runID string) string { return "bulk:" + operationID + ":" + runID }
