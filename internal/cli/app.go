package cli

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/bulk"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/connections"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/evals"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/export"
	"github.com/sluicehq/sluice/internal/protection"
	"github.com/sluicehq/sluice/internal/ratelimit"
	"github.com/sluicehq/sluice/internal/releases"
	"github.com/sluicehq/sluice/internal/retention"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/schedules"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/server"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tally"
	"github.com/sluicehq/sluice/internal/tracing"
	"github.com/sluicehq/sluice/internal/triggers"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/webhook"
	"github.com/sluicehq/sluice/internal/worker"
)

// app holds the long-lived components of a server process. Close releases
// them in reverse order of opening.
type app struct {
	cfg        *config.Config
	log        *slog.Logger
	db         *sql.DB
	client     *ent.Client
	redis      *redis.Client
	keys       *secrets.KeyRing
	auth       *auth.Authenticator
	control    *control.Service
	runs       *runs.Service
	webhooks   *webhook.Service
	escalation *escalation.Service
	triggers   *triggers.Service
	sla        *sla.Service
	releases   *releases.Service
	evals      *evals.Service
	protection *protection.Service
	rateLimits *ratelimit.Service
	conns      *connections.Service // OAuth2 connections
	schedules  *schedules.Service
	bulk       *bulk.Service
	retention  *retention.Service
	exports    *export.Service
	asynq      *asynq.Client
	metrics    *server.Metrics
	dispatcher *worker.Dispatcher
	closers    []func()
}

func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

// keyRing loads the master keys; development falls back to a fixed,
// clearly-marked ring that production refuses.
func keyRing(cfg *config.Config) (*secrets.KeyRing, error) {
	if cfg.MasterKeys == "" && cfg.Development() {
		return secrets.DevKeyRing(), nil
	}
	ring, err := secrets.ParseKeyRing(cfg.MasterKeys, cfg.MasterKeyID)
	if err != nil {
		return nil, fmt.Errorf("SLUICE_MASTER_KEYS: %w", err)
	}
	if ring.IsDev() && !cfg.Development() {
		return nil, errors.New("SLUICE_MASTER_KEYS holds the development key; refusing to run in production")
	}
	return ring, nil
}

// openApp connects to Postgres (app role) and Redis and builds the domain.
func openApp(ctx context.Context, cfg *config.Config, log *slog.Logger) (*app, error) {
	if err := cfg.CheckProduction(); err != nil {
		return nil, fmt.Errorf("unsafe configuration for production (set SLUICE_ENV=development for local use):\n%w", err)
	}
	if cfg.DatabaseAppURL == "" {
		return nil, errors.New("DATABASE_APP_URL is required")
	}
	a := &app{cfg: cfg, log: log}
	keys, err := keyRing(cfg)
	if err != nil {
		return nil, err
	}
	a.keys = keys
	var db *sql.DB
	err = waitFor(ctx, log, "the database", func(ctx context.Context) error {
		var err error
		db, err = store.Open(ctx, cfg.DatabaseAppURL, cfg.DatabaseMaxConns)
		return err
	})
	if err != nil {
		return nil, err
	}
	a.db = db
	a.closers = append(a.closers, func() { db.Close() })
	if err := waitFor(ctx, log, "the database", func(ctx context.Context) error { return checkAppRole(ctx, db) }); err != nil {
		a.Close()
		return nil, err
	}
	a.client = store.NewClient(db)
	if cfg.RedisURL == "" {
		a.Close()
		return nil, errors.New("REDIS_URL is required")
	}
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	a.redis = redis.NewClient(opts)
	a.redis.AddHook(tally.RedisHook{})
	a.closers = append(a.closers, func() { a.redis.Close() })
	if err := waitFor(ctx, log, "redis", func(ctx context.Context) error { return a.redis.Ping(ctx).Err() }); err != nil {
		a.Close()
		return nil, fmt.Errorf("redis: %w", err)
	}
	a.asynq = asynq.NewClientFromRedisClient(a.redis)
	a.dispatcher = worker.NewDispatcher(a.asynq, a.redis)
	verifierCtx, cancel := context.WithCancel(context.Background())
	a.closers = append(a.closers, cancel)
	jwtCfg := auth.JWTConfig{JWKSURL: cfg.JWTJWKSURL, Issuer: cfg.JWTIssuer, Audience: cfg.JWTAudience}
	if cfg.JWTJWKSURL == "" {
		jwtCfg.Secret = []byte(cfg.JWTSecret)
	}
	verifier, err := auth.NewJWTVerifier(verifierCtx, jwtCfg)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("JWT configuration: %w", err)
	}
	a.auth = auth.NewAuthenticator(verifier, a.client)
	tracer, err := tracing.New(ctx, cfg.OTLPEndpoint, "sluice")
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("SLUICE_OTLP_ENDPOINT: %w", err)
	}
	if tracer != nil {
		a.closers = append(a.closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tracer.Shutdown(sctx)
		})
	}
	a.metrics = server.NewMetrics()
	a.metrics.Registry.MustRegister(worker.NewQueueCollector(asynq.NewInspectorFromRedisClient(a.redis)),
		control.NewBacklogCollector(a.client, log, cfg.BacklogMetricsInterval))
	v := vault.New(keys)
	// Every process that commits run changes (serve and worker) publishes
	// them to the API processes' hubs.
	pub := runPublisher{events.NewRedisPublisher(a.redis, log)}
	// Closed before Redis (closers run last to first): queued notices leave.
	a.closers = append(a.closers, pub.p.Close)
	a.control = control.New(control.Options{Vault: v, Revocations: pub})
	a.webhooks = webhook.NewService(webhook.ServiceOptions{
		Client:     a.client,
		Vault:      v,
		Dispatcher: a.dispatcher,
		Log:        log,
		Options: webhook.Options{
			Egress:        egress.Config{AllowCIDRs: cfg.EgressAllowCIDRs},
			RequireHTTPS:  !cfg.Development(),
			ScheduleScale: cfg.WebhookScheduleScale,
			RotationGrace: cfg.WebhookRotationGrace,
		},
	})
	a.escalation = escalation.New(escalation.Options{
		Client:       a.client,
		Vault:        v,
		Webhooks:     a.webhooks,
		Dispatcher:   a.dispatcher,
		Log:          log,
		PagerDutyURL: cfg.PagerDutyEventsURL,
		Egress:       egress.Config{AllowCIDRs: cfg.EgressAllowCIDRs},
	})
	var group *store.Group
	if cfg.StepGroupMax > 1 {
		// Group commit of steps under load (store.Group); the API never
		// runs steps, so only workers use it.
		group = store.NewGroup(a.client, cfg.StepCommitLanes, cfg.StepGroupMax)
		g := group
		a.metrics.Registry.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_step_group_transactions_total",
				Help: "Shared transactions that committed the steps of two or more runs together (group commit).",
			}, func() float64 { return float64(g.Stats().Groups) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_step_grouped_total",
				Help: "Step transactions committed in a shared transaction (group commit).",
			}, func() float64 { return float64(g.Stats().Grouped) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "sluice_step_group_retried_total",
				Help: "Step transactions run again alone because their shared transaction failed.",
			}, func() float64 { return float64(g.Stats().Retried) }),
		)
	}
	a.sla = sla.New(sla.Options{
		Client:         a.client,
		Events:         a.webhooks,
		Publisher:      pub.p,
		Log:            log,
		SweepInterval:  cfg.SLASweepInterval,
		WindowInterval: cfg.SLAWindowInterval,
	})
	a.protection = protection.New(protection.Options{
		Client:   a.client,
		Control:  a.control,
		Events:   a.webhooks,
		Log:      log,
		Interval: cfg.DeployApprovalSweepInterval,
	})
	a.control.SetGate(a.protection)
	a.releases = releases.New(releases.Options{
		Gate:      a.protection,
		Client:    a.client,
		Events:    a.webhooks,
		Log:       log,
		Interval:  cfg.ReleaseAnalysisInterval,
		Incidents: a.sla,
	})
	newExecutor := func() *steps.Executor {
		return steps.NewExecutor(egress.NewClient(egress.Config{AllowCIDRs: cfg.EgressAllowCIDRs})).WithSensitiveFields(cfg.RedactFields)
	}
	executor := a.rateLimited(newExecutor())
	a.runs = runs.New(runs.Options{
		SLA:        a.sla,
		Client:     a.client,
		Vault:      v,
		Dispatcher: a.dispatcher,
		Publisher:  pub,
		Outbox:     a.webhooks,
		Escalator:  a.escalation,
		Executor:   executor,
		Log:        log,
		Metrics:    runs.NewMetrics(a.metrics.Registry),
		Tracer:     tracer,
		// Takeovers of silent steps and the crash limit (decide.go).
		HeartbeatStale: cfg.StepStaleAfter,
		CrashLimit:     cfg.StepCrashLimit,
		Group:          group,
		// Fair dispatch across tenants (internal/runs/dispatch.go).
		DispatchShare: cfg.DispatchShare,
	})
	a.escalation.SetRuns(a.runs)
	a.evals = evals.New(evals.Options{
		Client:    a.client,
		Runs:      a.runs,
		Events:    a.webhooks,
		Publisher: evalPublisher{pub.p},
		Log:       log,
		Interval:  cfg.EvalInterval,
		Vault:     v,
		// Judge calls are not steps: no limiter defers them.
		Models: newExecutor(),
	})
	a.runs.SetSandboxPlanner(a.evals)
	a.conns = newConnections(cfg, v, a, log)
	a.schedules = schedules.New(schedules.Options{Client: a.client, Runs: a.runs, Log: log, Interval: cfg.ScheduleInterval})
	a.bulk = bulk.New(bulk.Options{Client: a.client, Runs: a.runs, Publisher: bulkPublisher{pub.p}, Log: log, Rate: cfg.BulkRate, Interval: cfg.BulkInterval})
	a.triggers = triggers.New(triggers.Options{Client: a.client, Vault: v, Runs: a.runs, Log: log, SecretOverlap: cfg.TriggerSecretOverlap})
	a.sla.SetEscalator(escalation.Incidents{S: a.escalation})
	a.retention = retention.New(retention.Options{
		Client:   a.client,
		Log:      log,
		Day:      cfg.RetentionDay,
		Interval: cfg.RetentionInterval,
		Batch:    cfg.RetentionBatch,
		Purged:   retention.NewPurgedCounter(a.metrics.Registry),
	})
	if a.exports, err = newExports(cfg, a, log); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// newExports builds the export service on the configured store: S3 when
// SLUICE_EXPORT_S3_ENDPOINT is set, the local directory otherwise.
func newExports(cfg *config.Config, a *app, log *slog.Logger) (*export.Service, error) {
	var st export.Store = export.LocalStore{Dir: cfg.Export.Dir}
	if s3 := cfg.Export.S3; s3.Endpoint != "" {
		s, err := export.NewS3Store(export.S3Config{Endpoint: s3.Endpoint, Bucket: s3.Bucket, Region: s3.Region,
			AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, PathStyle: s3.PathStyle})
		if err != nil {
			return nil, err
		}
		st = s
	}
	return export.New(export.Options{Client: a.client, DB: a.db, Store: st, URLSecret: cfg.Export.URLSecret, Log: log,
		TTL: cfg.Export.TTL, URLTTL: cfg.Export.URLTTL, PublicURL: cfg.PublicURL,
		Interval: cfg.Export.Interval, PurgeInterval: cfg.Export.PurgeInterval}), nil
}

// runPublisher hands the run state machine's committed changes to the
// Redis publisher. The adapter lives here so internal/events does not
// import internal/runs (runs may use events, never the reverse).
type runPublisher struct{ p *events.RedisPublisher }

func (e runPublisher) Publish(ctx context.Context, n runs.RunNotice) {
	e.p.Publish(ctx, events.Notice{
		TenantID: n.TenantID, RunID: n.RunID, Status: n.Status,
		CostMicroUSD: n.CostMicroUSD, Events: events.FromRunEvents(n.Events),
	})
}

// evalPublisher tells API processes that an evaluation changed, on the
// tenant's channel like an incident (the id tells them apart).
type evalPublisher struct{ p *events.RedisPublisher }

func (e evalPublisher) PublishEvaluation(ctx context.Context, tenantID, id, status string) {
	e.p.PublishIncident(ctx, tenantID, id, status)
}

// bulkPublisher tells API processes that a bulk operation changed, on the
// tenant's channel like an incident (the id tells them apart).
type bulkPublisher struct{ p *events.RedisPublisher }

func (e bulkPublisher) PublishBulkOperation(ctx context.Context, tenantID, id, status string) {
	e.p.PublishIncident(ctx, tenantID, id, status)
}

// PublishKeyRevoked hands an API key revocation to the API processes.
func (e runPublisher) PublishKeyRevoked(ctx context.Context, tenantID, keyID string) {
	e.p.PublishKeyRevoked(ctx, tenantID, keyID)
}

// checkAppRole refuses to serve tenants through a role that RLS does not bind.
func checkAppRole(ctx context.Context, db *sql.DB) error {
	var user string
	var super, bypass bool
	err := db.QueryRowContext(ctx, "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user").Scan(&user, &super, &bypass)
	if err != nil {
		return fmt.Errorf("check app role: %w", err)
	}
	if super || bypass {
		return fmt.Errorf("DATABASE_APP_URL connects as %q, which is superuser or BYPASSRLS; use the non-owner app role (`sluice migrate up` creates it)", user)
	}
	var owns int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user").Scan(&owns); err != nil {
		return err
	}
	if owns > 0 {
		return fmt.Errorf("DATABASE_APP_URL connects as %q, which owns tables; FORCE RLS still applies but the app role must not own the schema", user)
	}
	return nil
}

// ready checks the database and Redis.
func (a *app) ready(ctx context.Context) error {
	var errs []string
	if err := a.db.PingContext(ctx); err != nil {
		errs = append(errs, "database: "+err.Error())
	}
	if err := a.redis.Ping(ctx).Err(); err != nil {
		errs = append(errs, "redis: "+err.Error())
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// startApp parses a long-running command's flags (none yet), loads the
// configuration and opens the app; serve and worker share it.
func startApp(ctx context.Context, name string, args []string, getenv func(string) string, stderr io.Writer) (*app, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, err
	}
	return openApp(ctx, cfg, newLogger(stderr, cfg.LogLevel))
}
