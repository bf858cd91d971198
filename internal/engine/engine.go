// Package engine is Sluice's domain: every mutation of tenant state goes
// through it, checks the caller's role, validates input and writes an audit
// entry in the same transaction. It always uses the tenant-scoped Ent client
// of the context (see internal/store), never a pool-wide one.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/llm"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tracing"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Engine performs domain operations for the viewer in the context.
type Engine struct {
	keys       *secrets.KeyRing
	client     *ent.Client
	dispatcher Dispatcher
	publisher  Publisher
	executor   *steps.Executor
	log        *slog.Logger
	now        func() time.Time
	defs       sync.Map // version id -> *definition.Definition (published versions never change)
	deps       sync.Map // version id -> map[step id][]dependent step ids
	// endpointLists caches each tenant's enabled webhook endpoints by its
	// webhooks_version (enabledEndpoints).
	endpointLists sync.Map // tenant id -> endpointList
	shipped       *llm.Table
	webhooks      WebhookOptions
	tracer        *tracing.Exporter
	hooks         *http.Client // webhook deliveries: egress-guarded, 15s, no redirects
	metrics       *Metrics
	stale         time.Duration // see Options.HeartbeatStale
	crashLimit    int           // see Options.CrashLimit
}

// Options configure an Engine. Client, Dispatcher and Executor are needed
// for runs; the control plane works without them.
type Options struct {
	Keys       *secrets.KeyRing
	Client     *ent.Client // app role pool, for worker-side transactions
	Dispatcher Dispatcher
	Publisher  Publisher // optional: live subscriptions
	Executor   *steps.Executor
	Log        *slog.Logger // if nil, slog.Default()
	Metrics    *Metrics     // optional
	Webhooks   WebhookOptions
	Tracer     *tracing.Exporter // optional: OTLP export of runs
	// HeartbeatStale is how long a running step's heartbeat may be silent
	// before its worker is presumed dead and the step is taken over;
	// heartbeats beat three times as often. If zero, HeartbeatStale.
	HeartbeatStale time.Duration
	// CrashLimit is how many times a step may be taken over (its worker
	// went silent while running it) before it fails with class `crashed`.
	// If zero, DefaultCrashLimit.
	CrashLimit int
	// Now is the engine's clock: what it records as the time of a claim,
	// a heartbeat, a retry's ready_at, an approval's expiry, and what it
	// compares them with. If nil, the UTC wall clock truncated to
	// microseconds (Postgres's precision). Tests inject one they advance.
	Now func() time.Time
}

// DefaultCrashLimit is Options.CrashLimit's default.
const DefaultCrashLimit = 3

// New returns an Engine.
func New(o Options) *Engine {
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
	return &Engine{stale: o.HeartbeatStale, crashLimit: o.CrashLimit, keys: o.Keys, client: o.Client, dispatcher: o.Dispatcher, publisher: o.Publisher, executor: o.Executor, log: log, shipped: llm.Shipped(), metrics: o.Metrics,
		webhooks: o.Webhooks, tracer: o.Tracer, hooks: egress.NewClient(egressForWebhooks(o.Webhooks.Egress)), now: o.Now}
}

var (
	slugPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
)

// authorize returns the viewer and its tenant client when the viewer holds one
// of roles (owner and admin hold all).
func authorize(ctx context.Context, roles ...string) (*viewer.Viewer, *ent.Client, error) {
	v := viewer.FromContext(ctx)
	if v == nil {
		return nil, nil, errs.E(errs.Unauthenticated, "authentication required")
	}
	if !v.Has(roles...) {
		return nil, nil, errs.E(errs.Forbidden, "this operation needs one of the roles %v", roles)
	}
	c, err := store.Client(ctx)
	if err != nil {
		return nil, nil, err
	}
	return v, c, nil
}

// authorizeTenantWide is authorize for tenant-wide administration (webhook
// endpoints, environments, budgets, prices, API keys), which a caller
// restricted to one environment may not do whatever its roles. The scope is
// checked first, so the answer never depends on the object named.
func authorizeTenantWide(ctx context.Context, roles ...string) (*viewer.Viewer, *ent.Client, error) {
	if err := RefuseEnvironmentScoped(ctx); err != nil {
		return nil, nil, err
	}
	return authorize(ctx, roles...)
}

// RefuseEnvironmentScoped refuses a caller restricted to one environment
// (an environment-scoped API key) with FORBIDDEN; anyone else passes.
func RefuseEnvironmentScoped(ctx context.Context) error {
	v := viewer.FromContext(ctx)
	if v == nil || v.EnvironmentID == "" || v.System {
		return nil
	}
	name := v.EnvironmentID
	if c, err := store.Client(ctx); err == nil {
		if env, err := c.Environment.Get(ctx, v.EnvironmentID); err == nil {
			name = env.Name
		}
	}
	return errs.E(errs.Forbidden, "this API key is scoped to environment %s; tenant-wide administration needs an unscoped credential", quote(name))
}

// inScope reports whether the viewer may reach objects of environmentID.
// Objects outside its scope read exactly like objects that do not exist:
// the privacy rules hide them (and environments) from such a viewer, so an
// operation finds them missing at the point it would find a missing id;
// inScope is the check under that.
func inScope(v *viewer.Viewer, environmentID string) bool {
	return v.EnvironmentID == "" || v.EnvironmentID == environmentID
}

// audit appends one audit entry in the current transaction.
func audit(ctx context.Context, c *ent.Client, action, targetType, targetID string, meta map[string]any) error {
	v := viewer.FromContext(ctx)
	actorType := "user"
	switch {
	case v.System:
		actorType = "system"
	case v.APIKeyID != "":
		actorType = "api_key"
	}
	actor := v.Subject
	if v.APIKeyID != "" {
		actor = v.APIKeyID
	}
	q := c.AuditLog.Create().
		SetActor(actor).
		SetActorType(actorType).
		SetAction(action).
		SetTargetType(targetType).
		SetTargetID(targetID).
		SetRequestID(requestid.FromContext(ctx))
	if meta != nil {
		q.SetMetadata(meta)
	}
	if err := q.Exec(ctx); err != nil {
		return fmt.Errorf("write audit entry: %w", err)
	}
	return nil
}

// dbError turns storage errors users can cause into domain errors.
func dbError(err error, what string) error {
	if err == nil {
		return nil
	}
	// Only a unique violation means "already exists"; a foreign key, check
	// or not-null violation is classified by its kind at the API boundary
	// (graph.classify).
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code != "23505" {
		return err
	}
	if ent.IsConstraintError(err) {
		return errs.E(errs.Conflict, "%s already exists", what)
	}
	return err
}
