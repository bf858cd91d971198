// Package config reads Sluice's configuration from environment variables and
// resolves every default in one place. See the README for the table.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Environments Sluice runs in.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// DefaultMetricsAddr is where the API serves /metrics unless
// SLUICE_METRICS_ADDR says otherwise: loopback only, and not 9090, which
// Prometheus itself listens on.
const DefaultMetricsAddr = "127.0.0.1:9464"

// DevJWTSecret signs development tokens. Production refuses to start with it.
const DevJWTSecret = "sluice-development-secret-do-not-use-in-production"

// Config is the whole runtime configuration.
type Config struct {
	// Env is "development" or "production" (SLUICE_ENV). If unset, production:
	// unsafe defaults must be asked for, never fallen into.
	Env string
	// Addr is the HTTP listen address (SLUICE_ADDR). If unset, ":8080".
	Addr string
	// DatabaseURL connects as the owner of the schema; used for migrations and
	// tenant provisioning (DATABASE_URL).
	DatabaseURL string
	// DatabaseAppURL connects as the non-owner app role that serves requests
	// (DATABASE_APP_URL). Required.
	DatabaseAppURL string
	// DatabaseMaxConns caps the app pool (SLUICE_DB_MAX_CONNS). If unset, 20.
	DatabaseMaxConns int
	// RedisURL is asynq's Redis (REDIS_URL). Empty in `sluice dev` means an
	// embedded Redis.
	RedisURL string

	JWTSecret   string // SLUICE_JWT_SECRET (HS256; development)
	JWTJWKSURL  string // SLUICE_JWT_JWKS_URL (RS256/ES256/EdDSA; production)
	JWTIssuer   string // SLUICE_JWT_ISSUER. If unset in development, "sluice-dev".
	JWTAudience string // SLUICE_JWT_AUDIENCE. If unset in development, "sluice".

	MasterKeys  string // SLUICE_MASTER_KEYS "id:base64key,..."; a fixed dev ring in development if unset
	MasterKeyID string // SLUICE_MASTER_KEY_ID, the active key

	// EgressAllowCIDRs are private ranges outbound calls may reach anyway
	// (SLUICE_EGRESS_ALLOW_CIDRS, comma separated). Tests use 127.0.0.0/8.
	EgressAllowCIDRs []netip.Prefix

	// Introspection and GraphiQL (SLUICE_GRAPHQL_INTROSPECTION). If unset,
	// on in development and off in production.
	Introspection bool
	// AllowedOrigins for browser websockets (SLUICE_ALLOWED_ORIGINS, comma
	// separated host patterns). If unset, none: only non-browser clients.
	AllowedOrigins []string
	// MaxBodyBytes limits request bodies (SLUICE_MAX_BODY_BYTES). If unset, 1 MiB.
	MaxBodyBytes int64
	// PublicURL is the API's address as its callers reach it
	// (SLUICE_PUBLIC_URL, e.g. https://sluice.example.com), which wait
	// steps' callback URLs start with. If unset, callback URLs are paths
	// (/callbacks/...).
	PublicURL string
	// QueryComplexity limits a query's cost (SLUICE_QUERY_COMPLEXITY): each
	// field costs 1 and lists multiply their items' cost by their length
	// (graph.Costed). If unset, 500000.
	QueryComplexity int
	// MaxResponseBytes bounds one GraphQL response (SLUICE_MAX_RESPONSE_BYTES):
	// past it the query stops and answers an error. If unset, 16 MiB.
	MaxResponseBytes int64
	// QueryDepth limits a query's nesting (SLUICE_QUERY_DEPTH). If unset, 12.
	QueryDepth int
	// ShutdownTimeout bounds graceful shutdown (SLUICE_SHUTDOWN_TIMEOUT). If unset, 20s.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error (SLUICE_LOG_LEVEL). If unset, info.
	LogLevel string
	// WebhookScheduleScale multiplies the webhook retry schedule and the
	// disable-after period (SLUICE_WEBHOOK_SCHEDULE_SCALE). If unset, 1;
	// tests use a small value so the schedule runs in seconds.
	WebhookScheduleScale float64
	// PagerDutyEventsURL is where PagerDuty events are posted
	// (SLUICE_PAGERDUTY_EVENTS_URL). If unset, the PagerDuty Events API v2
	// (https://events.pagerduty.com/v2/enqueue); tests point it at a
	// loopback receiver.
	PagerDutyEventsURL string
	// WebhookRotationGrace is how long an old webhook secret keeps signing
	// after a rotation (SLUICE_WEBHOOK_ROTATION_GRACE). If unset, 24h.
	WebhookRotationGrace time.Duration
	// TriggerSecretOverlap is how long an inbound trigger's previous secret
	// keeps verifying after a rotation (SLUICE_TRIGGER_SECRET_OVERLAP). If
	// unset, 24h.
	TriggerSecretOverlap time.Duration
	// BacklogMetricsInterval is how old the sluice_backlog_* gauges may be
	// when scraped (SLUICE_BACKLOG_METRICS_INTERVAL): a scrape reads
	// Postgres again only after it. If unset, 10s.
	BacklogMetricsInterval time.Duration
	// Connections configures OAuth2 connections (connections.go).
	Connections Connections
	// SLASweepInterval is how often a worker looks for runs and approvals
	// past an SLA deadline (SLUICE_SLA_SWEEP_INTERVAL). If unset, 5s.
	SLASweepInterval time.Duration
	// SLAWindowInterval is how often window SLA objectives (success rate,
	// cost per window) are evaluated (SLUICE_SLA_WINDOW_INTERVAL). If
	// unset, 1m.
	SLAWindowInterval time.Duration
	// ReleaseAnalysisInterval is how often a worker analyses progressing
	// releases (SLUICE_RELEASE_ANALYSIS_INTERVAL). If unset, 30s.
	ReleaseAnalysisInterval time.Duration
	// DeployApprovalSweepInterval is how often a worker expires deployment
	// approval requests past their timeout
	// (SLUICE_DEPLOY_APPROVAL_SWEEP_INTERVAL). If unset, 30s.
	DeployApprovalSweepInterval time.Duration
	// EvalInterval is how often a worker moves open evaluations on
	// (SLUICE_EVAL_INTERVAL). If unset, 1s.
	EvalInterval time.Duration
	// RateLimitMaxWait bounds how long a step may wait for rate limits and
	// cooldowns, from its first start, before a wait is a transient failure
	// (SLUICE_RATE_LIMIT_MAX_WAIT). If unset, 24h.
	RateLimitMaxWait time.Duration
	// RateLimitRestoreInterval is how often a worker copies unexpired
	// cooldowns from Postgres back into Redis (SLUICE_RATE_LIMIT_RESTORE_INTERVAL).
	// If unset, 5s.
	RateLimitRestoreInterval time.Duration
	// RateLimitConcurrencyPoll is how soon a call refused by a full
	// maxConcurrent looks again (SLUICE_RATE_LIMIT_CONCURRENCY_POLL). If unset, 250ms.
	RateLimitConcurrencyPoll time.Duration
	// ScheduleInterval is how often a worker's schedule ticker looks for
	// due slots (SLUICE_SCHEDULE_INTERVAL). If unset, 1s.
	ScheduleInterval time.Duration
	// BulkRate is how many runs per second the workers' bulk processor acts
	// on, across all workers and tenants (SLUICE_BULK_RATE). If unset, 20.
	BulkRate int
	// BulkInterval is how often a worker's bulk processor looks for open
	// bulk operations when none is open (SLUICE_BULK_INTERVAL). If unset, 1s.
	BulkInterval time.Duration
	// RetentionInterval is the pause between passes of the retention
	// purge in workers (SLUICE_RETENTION_INTERVAL). If unset, 1h.
	RetentionInterval time.Duration
	// RetentionDay is the length of a retention policy's day
	// (SLUICE_RETENTION_DAY), for tests that cannot wait days. If unset,
	// 24h; production refuses less than 1h.
	RetentionDay time.Duration
	// RetentionBatch is how many runs (or entries) one transaction of the
	// retention purge takes (SLUICE_RETENTION_BATCH). If unset, 500.
	RetentionBatch int
	// Export configures data exports (config/export.go).
	Export Export
	// MetricsAddr is where `sluice serve` (and `dev`) serves /metrics, apart
	// from the public API port (SLUICE_METRICS_ADDR). If unset,
	// DefaultMetricsAddr; "off" serves none.
	MetricsAddr string
	// MetricsAddr, for `sluice worker`, serves /metrics on this address
	// (SLUICE_WORKER_METRICS_ADDR). If unset, the worker serves none.
	WorkerMetricsAddr string
	// OTLPEndpoint exports runs as OpenTelemetry traces to this OTLP/HTTP
	// base URL, e.g. http://collector:4318 (SLUICE_OTLP_ENDPOINT). If unset,
	// no export; trace ids are stored on runs either way.
	OTLPEndpoint string
	// RedactFields are extra JSON field names (case-insensitive) whose
	// values traces never keep (SLUICE_REDACT_FIELDS, comma separated). A
	// default list (password, token, apiKey, ssn...) always applies.
	RedactFields []string
	// StepStaleAfter is how long a running step's heartbeat may be silent
	// before its worker is presumed dead and another takes the step over
	// (SLUICE_STEP_STALE_AFTER). If unset, 15s. Tests shorten it.
	StepStaleAfter time.Duration
	// StepCrashLimit is how many takeovers a step survives before it fails
	// with class `crashed` (SLUICE_STEP_CRASH_LIMIT). If unset, 3.
	StepCrashLimit int
	// StepCommitLanes is how many step transactions a worker runs at once
	// before it groups the others into shared transactions
	// (SLUICE_STEP_COMMIT_LANES). If unset, 4.
	StepCommitLanes int
	// StepGroupMax is how many steps one shared transaction holds at most
	// (SLUICE_STEP_GROUP_MAX); 1 turns grouping off: every step then has a
	// transaction of its own and no lane limit applies. If unset, 16.
	StepGroupMax int
	// DispatchShare is how many ready steps a tenant of weight 1 may have
	// waiting in the step queue before the rest wait in Postgres, released
	// in turns as the queue drains (fair dispatch; SLUICE_DISPATCH_SHARE).
	// 0 turns fair dispatch off. If unset, 32.
	DispatchShare int
	// DispatchSweep is how often a worker releases the held steps of every
	// tenant that has some, beside the releases step transactions ask for
	// (SLUICE_DISPATCH_SWEEP). If unset, 1s.
	DispatchSweep time.Duration
}

// Development reports whether Sluice runs in development mode.
func (c *Config) Development() bool { return c.Env == EnvDevelopment }

// Load reads the configuration through getenv and applies defaults. It does
// not judge production safety; see CheckProduction.
func Load(getenv func(string) string) (*Config, error) {
	c := &Config{
		Env:            strings.ToLower(strings.TrimSpace(getenv("SLUICE_ENV"))),
		Addr:           getenv("SLUICE_ADDR"),
		DatabaseURL:    getenv("DATABASE_URL"),
		DatabaseAppURL: getenv("DATABASE_APP_URL"),
		RedisURL:       getenv("REDIS_URL"),
		JWTSecret:      getenv("SLUICE_JWT_SECRET"),
		JWTJWKSURL:     getenv("SLUICE_JWT_JWKS_URL"),
		JWTIssuer:      getenv("SLUICE_JWT_ISSUER"),
		JWTAudience:    getenv("SLUICE_JWT_AUDIENCE"),
		MasterKeys:     getenv("SLUICE_MASTER_KEYS"),
		MasterKeyID:    getenv("SLUICE_MASTER_KEY_ID"),
		LogLevel:       getenv("SLUICE_LOG_LEVEL"),
	}
	var errs []error
	if c.Env == "" {
		c.Env = EnvProduction
	}
	if c.Env != EnvDevelopment && c.Env != EnvProduction {
		errs = append(errs, fmt.Errorf("SLUICE_ENV must be development or production, got %q", c.Env))
	}
	if c.Addr == "" {
		c.Addr = ":8080"
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.Development() {
		if c.JWTSecret == "" && c.JWTJWKSURL == "" {
			c.JWTSecret = DevJWTSecret
		}
		if c.JWTIssuer == "" {
			c.JWTIssuer = "sluice-dev"
		}
		if c.JWTAudience == "" {
			c.JWTAudience = "sluice"
		}
	}
	c.DatabaseMaxConns = intVar(getenv, "SLUICE_DB_MAX_CONNS", 20, &errs)
	c.MaxBodyBytes = int64(intVar(getenv, "SLUICE_MAX_BODY_BYTES", 1<<20, &errs))
	c.QueryComplexity = intVar(getenv, "SLUICE_QUERY_COMPLEXITY", 500000, &errs)
	c.MaxResponseBytes = int64(intVar(getenv, "SLUICE_MAX_RESPONSE_BYTES", 16<<20, &errs))
	c.QueryDepth = intVar(getenv, "SLUICE_QUERY_DEPTH", 12, &errs)
	c.ShutdownTimeout = durationVar(getenv, "SLUICE_SHUTDOWN_TIMEOUT", 20*time.Second, &errs)
	c.StepStaleAfter = durationVar(getenv, "SLUICE_STEP_STALE_AFTER", 15*time.Second, &errs)
	c.StepCrashLimit = intVar(getenv, "SLUICE_STEP_CRASH_LIMIT", 3, &errs)
	c.StepCommitLanes = intVar(getenv, "SLUICE_STEP_COMMIT_LANES", 4, &errs)
	c.StepGroupMax = intVar(getenv, "SLUICE_STEP_GROUP_MAX", 16, &errs)
	c.DispatchShare = 32
	if v := getenv("SLUICE_DISPATCH_SHARE"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("SLUICE_DISPATCH_SHARE must be 0 (fair dispatch off) or a positive integer, got %q", v))
		} else {
			c.DispatchShare = n
		}
	}
	c.DispatchSweep = durationVar(getenv, "SLUICE_DISPATCH_SWEEP", time.Second, &errs)
	c.Introspection = c.Development()
	if v := getenv("SLUICE_GRAPHQL_INTROSPECTION"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("SLUICE_GRAPHQL_INTROSPECTION: %w", err))
		}
		c.Introspection = b
	}
	c.AllowedOrigins = list(getenv("SLUICE_ALLOWED_ORIGINS"))
	c.PublicURL = strings.TrimRight(strings.TrimSpace(getenv("SLUICE_PUBLIC_URL")), "/")
	c.WorkerMetricsAddr = getenv("SLUICE_WORKER_METRICS_ADDR")
	switch c.MetricsAddr = strings.TrimSpace(getenv("SLUICE_METRICS_ADDR")); strings.ToLower(c.MetricsAddr) {
	case "":
		c.MetricsAddr = DefaultMetricsAddr
	case "off":
		c.MetricsAddr = ""
	}
	c.OTLPEndpoint = getenv("SLUICE_OTLP_ENDPOINT")
	c.RedactFields = list(getenv("SLUICE_REDACT_FIELDS"))
	c.WebhookRotationGrace = durationVar(getenv, "SLUICE_WEBHOOK_ROTATION_GRACE", 24*time.Hour, &errs)
	c.TriggerSecretOverlap = durationVar(getenv, "SLUICE_TRIGGER_SECRET_OVERLAP", 24*time.Hour, &errs)
	c.BacklogMetricsInterval = durationVar(getenv, "SLUICE_BACKLOG_METRICS_INTERVAL", 10*time.Second, &errs)
	c.PagerDutyEventsURL = getenv("SLUICE_PAGERDUTY_EVENTS_URL")
	if v := c.PagerDutyEventsURL; v != "" {
		if u, err := url.Parse(v); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("SLUICE_PAGERDUTY_EVENTS_URL must be an http(s) URL, got %q", v))
		}
	}
	c.SLASweepInterval = durationVar(getenv, "SLUICE_SLA_SWEEP_INTERVAL", 5*time.Second, &errs)
	c.Connections = loadConnections(getenv, c.PublicURL, c.Addr, !c.Development(), &errs)
	c.ReleaseAnalysisInterval = durationVar(getenv, "SLUICE_RELEASE_ANALYSIS_INTERVAL", 30*time.Second, &errs)
	c.DeployApprovalSweepInterval = durationVar(getenv, "SLUICE_DEPLOY_APPROVAL_SWEEP_INTERVAL", 30*time.Second, &errs)
	c.SLAWindowInterval = durationVar(getenv, "SLUICE_SLA_WINDOW_INTERVAL", time.Minute, &errs)
	c.EvalInterval = durationVar(getenv, "SLUICE_EVAL_INTERVAL", time.Second, &errs)
	c.RateLimitMaxWait = durationVar(getenv, "SLUICE_RATE_LIMIT_MAX_WAIT", 24*time.Hour, &errs)
	c.RateLimitRestoreInterval = durationVar(getenv, "SLUICE_RATE_LIMIT_RESTORE_INTERVAL", 5*time.Second, &errs)
	c.RateLimitConcurrencyPoll = durationVar(getenv, "SLUICE_RATE_LIMIT_CONCURRENCY_POLL", 250*time.Millisecond, &errs)
	c.ScheduleInterval = durationVar(getenv, "SLUICE_SCHEDULE_INTERVAL", time.Second, &errs)
	c.BulkRate = intVar(getenv, "SLUICE_BULK_RATE", 20, &errs)
	c.BulkInterval = durationVar(getenv, "SLUICE_BULK_INTERVAL", time.Second, &errs)
	c.RetentionInterval = durationVar(getenv, "SLUICE_RETENTION_INTERVAL", time.Hour, &errs)
	c.RetentionDay = durationVar(getenv, "SLUICE_RETENTION_DAY", 24*time.Hour, &errs)
	c.RetentionBatch = intVar(getenv, "SLUICE_RETENTION_BATCH", 500, &errs)
	c.Export = loadExport(getenv, c.Development(), c.JWTSecret+c.JWTJWKSURL, &errs)
	c.WebhookScheduleScale = 1
	if v := getenv("SLUICE_WEBHOOK_SCHEDULE_SCALE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1 {
			errs = append(errs, fmt.Errorf("SLUICE_WEBHOOK_SCHEDULE_SCALE must be a number in (0, 1], got %q", v))
		} else {
			c.WebhookScheduleScale = f
		}
	}
	for _, s := range list(getenv("SLUICE_EGRESS_ALLOW_CIDRS")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("SLUICE_EGRESS_ALLOW_CIDRS: %w", err))
			continue
		}
		c.EgressAllowCIDRs = append(c.EgressAllowCIDRs, p)
	}
	return c, errors.Join(errs...)
}

// CheckProduction refuses unsafe settings outside development: development
// secrets, missing keys, introspection without an explicit opt-in.
func (c *Config) CheckProduction() error {
	if c.Development() {
		return nil
	}
	var errs []error
	switch {
	case c.JWTSecret == "" && c.JWTJWKSURL == "":
		errs = append(errs, errors.New("SLUICE_JWT_JWKS_URL (or SLUICE_JWT_SECRET) is required in production"))
	case c.JWTSecret == DevJWTSecret:
		errs = append(errs, errors.New("SLUICE_JWT_SECRET is the development secret"))
	case c.JWTSecret != "" && len(c.JWTSecret) < 32:
		errs = append(errs, errors.New("SLUICE_JWT_SECRET must be at least 32 bytes"))
	}
	if c.JWTIssuer == "" || c.JWTAudience == "" {
		errs = append(errs, errors.New("SLUICE_JWT_ISSUER and SLUICE_JWT_AUDIENCE are required in production"))
	}
	if c.MasterKeys == "" || c.MasterKeyID == "" {
		errs = append(errs, errors.New("SLUICE_MASTER_KEYS and SLUICE_MASTER_KEY_ID are required in production"))
	}
	if c.DatabaseAppURL == "" {
		errs = append(errs, errors.New("DATABASE_APP_URL is required in production"))
	}
	if c.RedisURL == "" {
		errs = append(errs, errors.New("REDIS_URL is required in production"))
	}
	if c.RetentionDay != 0 && c.RetentionDay < time.Hour {
		errs = append(errs, fmt.Errorf("SLUICE_RETENTION_DAY is %s; production needs at least 1h (a shorter day purges data sooner than its policy says)", c.RetentionDay))
	}
	if len(c.Export.URLSecret) == 0 {
		errs = append(errs, errors.New("SLUICE_EXPORT_URL_SECRET is required in production (it signs export download URLs)"))
	}
	return errors.Join(errs...)
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func intVar(getenv func(string) string, name string, def int, errs *[]error) int {
	v := getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		*errs = append(*errs, fmt.Errorf("%s must be a positive integer, got %q", name, v))
		return def
	}
	return n
}

func durationVar(getenv func(string) string, name string, def time.Duration, errs *[]error) time.Duration {
	v := getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		*errs = append(*errs, fmt.Errorf("%s must be a positive duration, got %q", name, v))
		return def
	}
	return d
}
