package model

import (
	"time"

	"github.com/sluicehq/sluice/ent/retentionpolicy"
)

// RetentionPolicy is one level's retention policy (internal/retention):
// what it sets (nil inherits) and what applies there. Hand-written so that
// the GraphQL type does not bind to the Ent row, which holds only the set
// values.
type RetentionPolicy struct {
	Scope               retentionpolicy.Scope `json:"scope"`
	TargetID            *string               `json:"targetID,omitempty"`
	PayloadDays         *int                  `json:"payloadDays,omitempty"`
	RunDays             *int                  `json:"runDays,omitempty"`
	AuditDays           *int                  `json:"auditDays,omitempty"`
	WebhookDeliveryDays *int                  `json:"webhookDeliveryDays,omitempty"`
	Effective           *RetentionDays        `json:"effective"`
	UpdatedBy           *string               `json:"updatedBy,omitempty"`
	UpdatedAt           *time.Time            `json:"updatedAt,omitempty"`
}
