package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// webhookTimeout bounds one delivery attempt, per the specification.
const webhookTimeout = 15 * time.Second

// webhookLease is how long a claimed attempt may stay unrecorded before the
// reconciler presumes its worker lost and sends the delivery again.
const webhookLease = webhookTimeout + 5*time.Second

// webhookEarlyWait is how early a wake-up may come and still be waited for
// in the handler: the queue schedules in whole seconds, so a wake-up can
// arrive up to a second before the attempt is due. Sending it then would
// shorten the schedule and break a receiver's Retry-After.
const webhookEarlyWait = 2 * time.Second

func egressForWebhooks(c egress.Config) egress.Config {
	c.Timeout = webhookTimeout
	return c
}

// delivery is what one attempt needs outside any transaction.
type delivery struct {
	id, webhookID, url string
	attempt            int
	body               []byte
	secrets            []string
}

// DeliverWebhook makes one attempt of a delivery: sign, POST, record, and
// schedule the next attempt, exhaust, or disable the endpoint.
func (s *Service) DeliverWebhook(ctx context.Context, tenantID, deliveryID string) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	var d *delivery
	for range 3 {
		var early time.Duration
		err := store.InTenant(ctx, s.client, func(ctx context.Context) error {
			var err error
			d, early, err = s.prepareDelivery(ctx, deliveryID)
			return err
		})
		if err != nil {
			return err
		}
		if d != nil || early <= 0 || early > webhookEarlyWait {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(early):
		}
	}
	if d == nil {
		return nil
	}
	start := time.Now()
	ts := start.UTC()
	headers, err := Headers(d.webhookID, ts, d.body, d.secrets...)
	if err != nil {
		return err
	}
	status, retryAfter, sendErr := s.post(ctx, d.url, headers, d.body)
	latency := time.Since(start)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return store.InTenant(context.WithoutCancel(ctx), s.client, func(ctx context.Context) error {
		return s.recordDelivery(ctx, d, status, retryAfter, sendErr, latency)
	})
}

// prepareDelivery claims the next attempt of a delivery that is due. It
// returns no delivery when there is nothing to send: done, or not due yet,
// in which case it also says how long until it is.
func (s *Service) prepareDelivery(ctx context.Context, id string) (*delivery, time.Duration, error) {
	c := ent.FromContext(ctx)
	d, err := c.WebhookDelivery.Query().Where(webhookdelivery.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	now := s.now()
	if d.Status != webhookdelivery.StatusPending {
		return nil, 0, nil
	}
	if d.NextAttemptAt != nil && d.NextAttemptAt.After(now) {
		// Not due: an early wake-up, a duplicate of an attempt in flight
		// (its lease), or a stale task. The reconciler sends it when due.
		return nil, d.NextAttemptAt.Sub(now), nil
	}
	ep, err := c.WebhookEndpoint.Get(ctx, d.EndpointID)
	if err != nil {
		return nil, 0, err
	}
	if !ep.Enabled {
		return nil, 0, d.Update().SetStatus(webhookdelivery.StatusCancelled).SetLastError("endpoint disabled").ClearNextAttemptAt().Exec(ctx)
	}
	cur, err := s.vault.OpenWebhookSecret(ctx, c, ep, ep.SecretVersion, ep.Secret)
	if err != nil {
		return nil, 0, err
	}
	secrets := []string{cur}
	if ep.PreviousSecret != nil && ep.PreviousSecretExpiresAt != nil && ep.PreviousSecretExpiresAt.After(now) {
		prev, err := s.vault.OpenWebhookSecret(ctx, c, ep, ep.SecretVersion-1, *ep.PreviousSecret)
		if err != nil {
			return nil, 0, err
		}
		secrets = append(secrets, prev)
	}
	body, err := json.Marshal(d.Payload)
	if err != nil {
		return nil, 0, err
	}
	// Claim the attempt number now, so a duplicate task cannot send it
	// twice, under a lease: if this worker dies before recording the
	// attempt (and Redis loses the task), the reconciler finds the
	// delivery due again once the lease ends, instead of never.
	if err := d.Update().SetAttempts(d.Attempts + 1).SetNextAttemptAt(now.Add(webhookLease)).Exec(ctx); err != nil {
		return nil, 0, err
	}
	return &delivery{id: d.ID, webhookID: d.WebhookID, url: ep.URL, attempt: d.Attempts + 1, body: body, secrets: secrets}, 0, nil
}

// post sends one request; 3xx are returned, never followed.
func (s *Service) post(ctx context.Context, url string, headers map[string]string, body []byte) (int, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, webhookTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Sluice-Webhooks/1")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, RetryAfter(resp.StatusCode, resp.Header, time.Now()), nil
}

func (s *Service) recordDelivery(ctx context.Context, d *delivery, status int, retryAfter time.Duration, sendErr error, latency time.Duration) error {
	c := ent.FromContext(ctx)
	row, err := c.WebhookDelivery.Query().Where(webhookdelivery.ID(d.id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil // the endpoint was deleted meanwhile
	}
	if err != nil {
		return err
	}
	if row.Status != webhookdelivery.StatusPending || row.Attempts != d.attempt {
		return nil // fenced: a redelivery took over
	}
	ep, err := c.WebhookEndpoint.Get(ctx, row.EndpointID)
	if err != nil {
		return err
	}
	// lockEndpoint re-reads the endpoint FOR UPDATE, only when its failure
	// streak or state is to change: successful deliveries to one endpoint
	// must not serialise on its row.
	lockEndpoint := func() error {
		ep, err = c.WebhookEndpoint.Query().Where(webhookendpoint.ID(row.EndpointID)).ForUpdate().Only(ctx)
		return err
	}
	now := s.now()
	attempt := c.WebhookAttempt.Create().SetDeliveryID(d.id).SetNumber(d.attempt).SetLatencyMs(latency.Milliseconds())
	du := row.Update()
	errMsg := ""
	if sendErr != nil {
		errMsg = sendErr.Error()
		if errors.Is(sendErr, egress.ErrDenied) {
			errMsg = "destination not allowed (it resolved to a private, loopback or metadata address)"
		}
		attempt.SetError(errMsg)
		du.SetLastError(errMsg).ClearLastStatusCode()
	} else {
		attempt.SetStatusCode(status)
		du.SetLastStatusCode(status).ClearLastError()
	}
	outcome := Classify(status)
	var wake []tasks.Task
	retry := false
	switch {
	case sendErr == nil && outcome == Delivered:
		du.SetStatus(webhookdelivery.StatusDelivered).SetDeliveredAt(now)
		if ep.FailingSince != nil {
			if err := lockEndpoint(); err != nil {
				return err
			}
			if err := ep.Update().ClearFailingSince().Exec(ctx); err != nil {
				return err
			}
		}
	case sendErr == nil && outcome == Gone:
		du.SetStatus(webhookdelivery.StatusExhausted)
		if err := lockEndpoint(); err != nil {
			return err
		}
		if err := s.disableEndpoint(ctx, c, ep, "the endpoint answered 410 Gone"); err != nil {
			return err
		}
	case errors.Is(sendErr, egress.ErrDenied):
		du.SetStatus(webhookdelivery.StatusExhausted)
	default:
		if err := lockEndpoint(); err != nil {
			return err
		}
		if ep.FailingSince == nil {
			if err := ep.Update().SetFailingSince(now).Exec(ctx); err != nil {
				return err
			}
		} else if now.Sub(*ep.FailingSince) > time.Duration(float64(DisableAfter)*s.opts.scale()) {
			du.SetStatus(webhookdelivery.StatusExhausted)
			if err := s.disableEndpoint(ctx, c, ep, "failing continuously for 5 days"); err != nil {
				return err
			}
			break
		}
		delay, ok := NextDelay(d.attempt, s.opts.scale(), retryAfter)
		if !ok {
			du.SetStatus(webhookdelivery.StatusExhausted)
			break
		}
		next := now.Add(delay)
		attempt.SetNextAttemptAt(next)
		du.SetNextAttemptAt(next)
		row.Attempts = d.attempt
		wake = append(wake, deliveryTask(ep.TenantID, row, next))
		retry = true
	}
	if !retry {
		du.ClearNextAttemptAt() // the claim's lease
	}
	if err := attempt.Exec(ctx); err != nil {
		return err
	}
	if err := du.Exec(ctx); err != nil {
		return err
	}
	s.dispatchAfterCommit(ctx, wake)
	return nil
}

// disableEndpoint stops deliveries to an endpoint and records why in the
// tenant's audit log, where admins see it.
func (s *Service) disableEndpoint(ctx context.Context, c *ent.Client, ep *ent.WebhookEndpoint, reason string) error {
	if !ep.Enabled {
		return nil
	}
	if err := ep.Update().SetEnabled(false).SetDisabledReason(reason).Exec(ctx); err != nil {
		return err
	}
	return audit.Record(ctx, c, "webhook_endpoint.disabled", "WebhookEndpoint", ep.ID, map[string]any{"reason": reason, "url": ep.URL})
}
