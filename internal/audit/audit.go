// Package audit writes the audit trail: one entry per mutation of tenant
// state, in the transaction of the mutation, naming who (user, API key or
// Sluice itself), what, and the request it came with.
package audit

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Record appends one audit entry in the transaction of c.
func Record(ctx context.Context, c *ent.Client, action, targetType, targetID string, meta map[string]any) error {
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
