// Package runs is the run state machine: it starts runs, claims and
// executes step attempts, records their results, advances the run through
// its definition (retries, approvals, delays, cancel, resume, replay), and
// finds work that is past due. Every change to a run happens in one
// transaction holding the run's row lock, with its events numbered without
// gaps. It reaches the queue, live subscribers and the webhook outbox only
// through the small interfaces of seams.go.
package runs

import (
	"log/slog"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/tracing"
	"github.com/sluicehq/sluice/internal/vault"
)

// Service runs the state machine for the viewer in the context (API
// requests) or for the tenant a worker's task names.
type Service struct {
	client     *ent.Client
	vault      *vault.Vault
	dispatcher tasks.Dispatcher
	publisher  Publisher
	outbox     Outbox
	escalator  Escalator
	sla        SLA
	sandbox    SandboxPlanner // see SetSandboxPlanner
	executor   *steps.Executor
	log        *slog.Logger
	now        func() time.Time
	defs       sync.Map // version id -> *definition.Definition (published versions never change)
	dependents sync.Map // version id -> map[step id][]ids of the steps that need it
	tracer     *tracing.Exporter
	metrics    *Metrics
	stale      time.Duration // see Options.HeartbeatStale
	crashLimit int           // see Options.CrashLimit
	group      *store.Group  // see Options.Group
	// callbackKeys: tenant id -> key of the tenant's callback tokens (wait.go)
	callbackKeys sync.Map
	// vars caches environments' variables versions (envvars.go).
	vars varsCache
	// resp: the response cache and learned shapes of http steps (respchecks.go).
	resp responseChecks
	// creds: steps waiting for connections (credwait.go); nil without.
	creds *credentialWaits
	// share and releaser: fair dispatch (dispatch.go).
	share    int
	releaser Releaser
	// stepLimits: version id -> its steps' named limits (limits.go).
	stepLimits sync.Map
}

// Options configure a Service.
type Options struct {
	Client     *ent.Client // app role pool, for worker-side transactions
	Vault      *vault.Vault
	Dispatcher tasks.Dispatcher
	Publisher  Publisher // optional: live subscriptions
	Outbox     Outbox    // optional: outbound webhooks
	Escalator  Escalator // optional: escalation of approvals
	SLA        SLA       // optional: SLA deadlines of new runs
	Executor   *steps.Executor
	Log        *slog.Logger      // if nil, slog.Default()
	Metrics    *Metrics          // optional
	Tracer     *tracing.Exporter // optional: OTLP export of runs
	// HeartbeatStale is how long a running step's heartbeat may be silent
	// before its worker is presumed dead and the step is taken over;
	// heartbeats beat three times as often. If zero, HeartbeatStale.
	HeartbeatStale time.Duration
	// CrashLimit is how many times a step may be taken over (its worker
	// went silent while running it) before it fails with class `crashed`.
	// If zero, DefaultCrashLimit.
	CrashLimit int
	// Now is the state machine's clock: what it records as the time of a claim,
	// a heartbeat, a retry's ready_at, an approval's expiry, and what it
	// compares them with. If nil, the UTC wall clock truncated to
	// microseconds (Postgres's precision). Tests inject one they advance.
	Now func() time.Time
	// Group, if set, runs the transactions of steps of different runs
	// together under load (group commit, see store.Group); workers set
	// it. If nil, each step has a transaction of its own.
	Group *store.Group
	// DispatchShare is how many ready steps a tenant of weight 1 may have
	// waiting in the queue before more wait in Postgres (fair dispatch,
	// dispatch.go); 0 turns fair dispatch off.
	DispatchShare int
}

// DefaultCrashLimit is Options.CrashLimit's default.
const DefaultCrashLimit = 3

// New returns a Service.
func New(o Options) *Service {
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	if o.HeartbeatStale <= 0 {
		o.HeartbeatStale = HeartbeatStale
	}
	if o.CrashLimit <= 0 {
		o.CrashLimit = DefaultCrashLimit
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	return &Service{stale: o.HeartbeatStale, crashLimit: o.CrashLimit, client: o.Client, vault: o.Vault, dispatcher: o.Dispatcher,
		publisher: o.Publisher, outbox: o.Outbox, escalator: o.Escalator, sla: o.SLA, executor: o.Executor, log: log, metrics: o.Metrics, tracer: o.Tracer, now: o.Now,
		group: o.Group, share: o.DispatchShare}
}
