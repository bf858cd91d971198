// Package events carries committed run changes between processes: the
// message published on Redis after each commit (RedisPublisher) and the
// per-process fan-out to live subscribers (Hub). Postgres stays the source of
// truth; a message lost here is a gap the subscriber fills from the event log.
package events

import (
	"time"

	"github.com/sluicehq/sluice/ent"
)

// channelPrefix names the Redis pub/sub channels, one per tenant:
// "sluice:runs:<tenantID>". It is a wire name: never rename it.
const channelPrefix = "sluice:runs:"

// KeyRevokedChannel carries API key revocations to every API process, so
// the streams a key opened end wherever they run. It is not under
// channelPrefix. A wire name: never rename it.
const KeyRevokedChannel = "sluice:keys:revoked"

// KeyRevoked is the message on KeyRevokedChannel.
type KeyRevoked struct {
	TenantID string `json:"tenantID"`
	KeyID    string `json:"keyID"`
}

// Channel returns the pub/sub channel of a tenant's run changes.
func Channel(tenantID string) string { return channelPrefix + tenantID }

// Notice is one committed change of a run: its events in seq order and its
// status and cost after the commit. It is the JSON published on Redis; the
// tenant travels in the channel name, not in the body.
type Notice struct {
	TenantID     string  `json:"-"`
	RunID        string  `json:"runID"`
	Status       string  `json:"status"`
	CostMicroUSD int64   `json:"costMicroUSD"`
	Events       []Event `json:"events"`
	// Resync is set by the Hub (never published) when messages may have been
	// lost, e.g. after Redis reconnected: subscribers re-read the log.
	Resync bool `json:"-"`
}

// Event is a run event as published: the stored row without its tenant.
type Event struct {
	ID      string         `json:"id"`
	Seq     int64          `json:"seq"`
	Type    string         `json:"type"`
	StepID  *string        `json:"stepID,omitempty"`
	Attempt *int           `json:"attempt,omitempty"`
	Data    map[string]any `json:"data,omitempty"`
	At      time.Time      `json:"at"`
}

// FromRunEvents converts stored events for publishing.
func FromRunEvents(list []*ent.RunEvent) []Event {
	out := make([]Event, len(list))
	for i, e := range list {
		out[i] = Event{ID: e.ID, Seq: e.Seq, Type: e.Type, StepID: e.StepID, Attempt: e.Attempt, Data: e.Data, At: e.At}
	}
	return out
}

// RunEvent returns the event as the stored entity of run runID. It carries
// no database handle: its edges cannot be loaded.
func (e Event) RunEvent(tenantID, runID string) *ent.RunEvent {
	return &ent.RunEvent{ID: e.ID, TenantID: tenantID, RunID: runID, Seq: e.Seq, Type: e.Type, StepID: e.StepID, Attempt: e.Attempt, Data: e.Data, At: e.At}
}

// Terminal reports whether a run status is final (until a resume).
func Terminal(status string) bool {
	switch status {
	case "succeeded", "failed", "cancelled":
		return true
	}
	return false
}
