// Package graph is Sluice's GraphQL layer: the schema, the generated
// executable schema, thin resolvers that call the control plane
// (internal/control), the run state machine (internal/runs) and outbound
// webhooks (internal/webhook), and the error presenter. Resolvers hold no
// domain logic.
package graph

import (
	"github.com/sluicehq/sluice/internal/bulk"
	"github.com/sluicehq/sluice/internal/concurrency"
	"github.com/sluicehq/sluice/internal/connections"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/evals"
	"github.com/sluicehq/sluice/internal/export"
	"github.com/sluicehq/sluice/internal/limits"
	"github.com/sluicehq/sluice/internal/pause"
	"github.com/sluicehq/sluice/internal/protection"
	"github.com/sluicehq/sluice/internal/ratelimit"
	"github.com/sluicehq/sluice/internal/releases"
	"github.com/sluicehq/sluice/internal/retention"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/schedules"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/triggers"
	"github.com/sluicehq/sluice/internal/webhook"
)

// Resolver is the root resolver.
type Resolver struct {
	Control  *control.Service
	Runs     *runs.Service
	Webhooks *webhook.Service
	// Escalation manages escalation policies.
	Escalation *escalation.Service
	SLA        *sla.Service
	// Releases manages releases and rollbackDeployment.
	Releases *releases.Service
	// Evals creates and lists evaluations.
	Evals *evals.Service
	// Protection manages protected environments and deployment requests.
	Protection *protection.Service
	// RateLimits manages limit policies and reads their state.
	RateLimits *ratelimit.Service
	// Connections manages OAuth2 connections.
	Connections *connections.Service
	// Scheduler manages schedules (internal/schedules).
	Scheduler *schedules.Service
	// Exports manages data exports (internal/export).
	Exporter *export.Service
	// Triggers manages inbound webhook triggers.
	Triggers *triggers.Service
	// Bulk creates, cancels and reads bulk operations (internal/bulk).
	Bulk *bulk.Service
	// Pause pauses and resumes workflows in environments.
	Pause *pause.Service
	// Concurrency sets and reads workflows' concurrency per environment
	// (internal/concurrency); nil: a default one.
	Concurrency *concurrency.Service
	// Limits manages named concurrency limits (internal/limits); if nil,
	// one without releases on change (the dispatch sweep releases).
	Limits *limits.Service
	// Retention serves retention policies, legal holds and the purge's
	// record (internal/retention).
	Retention *retention.Service
	// PublicURL starts the callback URLs of wait steps (config.PublicURL).
	PublicURL string
}

// limits is the named limits service.
func (r *Resolver) limits() *limits.Service {
	if r.Limits == nil {
		return limits.New(nil)
	}
	return r.Limits
}
