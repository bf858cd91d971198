package events

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

// publishTimeout bounds one PUBLISH: the run state machine calls Publish inline after a
// commit, and a Redis outage must not stall runs (subscribers fill the gap
// from the log).
const publishTimeout = 2 * time.Second

// RedisPublisher is responsible for telling every API process about a
// committed run change: one PUBLISH on the tenant's channel.
type RedisPublisher struct {
	rdb redis.UniversalClient
	log *slog.Logger
}

// NewRedisPublisher publishes through rdb. log nil means slog.Default().
func NewRedisPublisher(rdb redis.UniversalClient, log *slog.Logger) *RedisPublisher {
	if log == nil {
		log = slog.Default()
	}
	return &RedisPublisher{rdb: rdb, log: log}
}

// Publish sends n to the API processes. Delivery is best effort: a failure is
// logged and dropped.
func (p *RedisPublisher) Publish(ctx context.Context, n Notice) {
	if n.TenantID == "" || n.RunID == "" {
		return
	}
	b, err := json.Marshal(n)
	if err != nil {
		p.log.WarnContext(ctx, "encode run notice", "err", err, "run_id", n.RunID)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := p.rdb.Publish(ctx, Channel(n.TenantID), b).Err(); err != nil {
		p.log.WarnContext(ctx, "publish run notice; subscribers will read the gap from the log", "err", err, "run_id", n.RunID)
	}
}

// PublishIncident tells the API processes that an incident changed
// (incidentUpdated). It travels on the tenant's channel as a notice with
// the incident id (inc_...) in runID and its status, and no events; run
// streams skip it. Best effort like Publish.
func (p *RedisPublisher) PublishIncident(ctx context.Context, tenantID, incidentID, status string) {
	p.Publish(ctx, Notice{TenantID: tenantID, RunID: incidentID, Status: status})
}

// PublishKeyRevoked tells every API process that an API key was revoked.
// Best effort like Publish: a process that misses it finds the revocation
// when it re-reads the keys of its open streams (auth.Leases).
func (p *RedisPublisher) PublishKeyRevoked(ctx context.Context, tenantID, keyID string) {
	b, err := json.Marshal(KeyRevoked{TenantID: tenantID, KeyID: keyID})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	if err := p.rdb.Publish(ctx, KeyRevokedChannel, b).Err(); err != nil {
		p.log.WarnContext(ctx, "publish API key revocation; streams end at the next re-check", "err", err, "api_key_id", keyID)
	}
}
