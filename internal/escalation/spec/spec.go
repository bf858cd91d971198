// Package spec holds the shapes of escalation policies that are stored as
// JSON (a policy's levels, an escalation's snapshot of them and its record
// of levels fired). It is a leaf: the Ent schema and the GraphQL models use
// these types, and internal/escalation validates and runs them.
package spec

import (
	"fmt"
	"io"
	"strconv"
	"time"
)

// Condition says when a level fires.
type Condition string

const (
	// IfNotAcknowledged fires the level only while no one has acknowledged
	// the subject (the default).
	IfNotAcknowledged Condition = "IF_NOT_ACKNOWLEDGED"
	// IfNotResolved fires the level while the subject is still open, even
	// when acknowledged.
	IfNotResolved Condition = "IF_NOT_RESOLVED"
)

// Valid reports whether c is a known condition.
func (c Condition) Valid() bool { return c == IfNotAcknowledged || c == IfNotResolved }

// MarshalGQL writes c as a GraphQL enum value.
func (c Condition) MarshalGQL(w io.Writer) { _, _ = io.WriteString(w, strconv.Quote(string(c))) }

// UnmarshalGQL reads c from a GraphQL enum value.
func (c *Condition) UnmarshalGQL(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("escalation condition must be a string")
	}
	*c = Condition(s)
	if !c.Valid() {
		return fmt.Errorf("%q is not a valid EscalationCondition", s)
	}
	return nil
}

// Level is one step of a policy: after Delay (from the previous level, or
// from the start for the first), if Condition holds, page Targets.
type Level struct {
	// Delay is a Go duration string ("5m").
	Delay     string    `json:"delay"`
	Condition Condition `json:"condition"`
	Targets   []Target  `json:"targets"`
}

// DelayDuration is Delay parsed; a stored level always parses.
func (l Level) DelayDuration() time.Duration {
	d, _ := time.ParseDuration(l.Delay)
	return d
}

// Target is who a level pages: exactly one of its fields is set.
type Target struct {
	WebhookEndpointID *string          `json:"webhookEndpointID,omitempty"`
	PagerDuty         *PagerDutyTarget `json:"pagerDuty,omitempty"`
	Role              *string          `json:"role,omitempty"`
}

// PagerDutyTarget pages a PagerDuty service through the Events API v2; the
// routing key is the secret of a `pagerduty` credential.
type PagerDutyTarget struct {
	CredentialID string `json:"credentialID"`
	// Severity overrides the subject's severity (critical, error, warning, info).
	Severity *string `json:"severity,omitempty"`
}

// Firing is the record of one level reached by an escalation.
type Firing struct {
	Level int       `json:"level"`
	Loop  int       `json:"loop"`
	At    time.Time `json:"at"`
	// Outcome: "fired", or "skipped" when the level's condition no longer held.
	Outcome string   `json:"outcome"`
	Targets []Target `json:"targets"`
	// Members are the subjects holding the roles the level named.
	Members []string `json:"members,omitempty"`
	// WebhookDeliveryIDs and PagerDutySendIDs are what the level wrote.
	WebhookDeliveryIDs []string `json:"webhookDeliveryIDs,omitempty"`
	PagerDutySendIDs   []string `json:"pagerDutySendIDs,omitempty"`
}

// Attempt is one try of a PagerDuty send.
type Attempt struct {
	At         time.Time `json:"at"`
	StatusCode *int      `json:"statusCode,omitempty"`
	Error      *string   `json:"error,omitempty"`
	LatencyMs  int64     `json:"latencyMs"`
}
