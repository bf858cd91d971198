package webhook

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/webhookattempt"
)

// AttemptsOfDeliveries returns each webhook delivery's attempts, oldest
// first.
func AttemptsOfDeliveries(ctx context.Context, c *ent.Client, deliveryIDs []string) (map[string][]*ent.WebhookAttempt, error) {
	out := make(map[string][]*ent.WebhookAttempt, len(deliveryIDs))
	if len(deliveryIDs) == 0 {
		return out, nil
	}
	list, err := c.WebhookAttempt.Query().Where(webhookattempt.DeliveryIDIn(deliveryIDs...)).
		Order(ent.Asc(webhookattempt.FieldDeliveryID), ent.Asc(webhookattempt.FieldNumber)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range list {
		out[a.DeliveryID] = append(out[a.DeliveryID], a)
	}
	return out, nil
}
