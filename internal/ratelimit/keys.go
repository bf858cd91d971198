// Package ratelimit owns limits on outbound calls: limit policies (tenant
// data: per credential, or per host, a bucket per credential or one for the
// tenant), the check a worker makes right before each call (one Redis
// script: the scope's cooldowns, a semaphore of calls in flight whose
// holders expire, GCRA with reserved slots), the cooldowns upstreams ask for
// with a 429 or 503 (Redis for the hot path, Postgres for durability, a
// restorer that copies them back after a Redis wipe) and their metrics.
//
// A call over a limit is not failed: the executor returns a steps.Deferral
// and the run state machine reschedules the attempt at the slot's time
// without spending a retry (internal/runs/deferral.go).
package ratelimit

import (
	"strings"
)

// Redis keys of a tenant share the {tenant} hash tag, so the one script
// touching them runs on one node of a cluster.
func tenantPrefix(tenantID string) string { return "sluice:rl:{" + tenantID + "}:" }

func versionKey(tenantID string) string { return tenantPrefix(tenantID) + "ver" }

// hostBucket is the bucket of a host no policy covers: only cooldowns.
func hostBucket(host string) string { return "h:" + strings.ToLower(host) }

func cooldownKey(tenantID, bucket string) string { return tenantPrefix(tenantID) + "cd:" + bucket }
func tatKey(tenantID, bucket string) string      { return tenantPrefix(tenantID) + "tat:" + bucket }
func semKey(tenantID, bucket string) string      { return tenantPrefix(tenantID) + "sem:" + bucket }
func reservationKey(tenantID, bucket, attemptID string) string {
	return tenantPrefix(tenantID) + "res:" + bucket + ":" + attemptID
}
