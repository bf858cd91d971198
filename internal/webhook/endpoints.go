package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Options tune outbound webhooks.
type Options struct {
	// Egress is the outbound policy endpoints must pass, at creation and at
	// every delivery.
	Egress egress.Config
	// RequireHTTPS refuses http:// endpoints (production).
	RequireHTTPS bool
	// ScheduleScale multiplies the retry schedule and the disable-after
	// period. If zero, 1; tests shrink it so the schedule runs in seconds.
	ScheduleScale float64
	// RotationGrace is how long the old secret keeps signing after a
	// rotation. If zero, 24h.
	RotationGrace time.Duration
}

func (o Options) scale() float64 {
	if o.ScheduleScale <= 0 {
		return 1
	}
	return o.ScheduleScale
}

func (o Options) grace() time.Duration {
	if o.RotationGrace <= 0 {
		return 24 * time.Hour
	}
	return o.RotationGrace
}

// checkEndpointURL validates an endpoint URL and the addresses it resolves to.
func (s *Service) checkEndpointURL(ctx context.Context, raw, path string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return errs.Invalid(path, "must be an absolute http(s) URL")
	}
	if u.User != nil {
		return errs.Invalid(path, "must not carry credentials")
	}
	if s.opts.RequireHTTPS && u.Scheme != "https" {
		return errs.Invalid(path, "must use https")
	}
	if err := egress.CheckURL(ctx, s.opts.Egress, raw, s.opts.RequireHTTPS); err != nil {
		if errors.Is(err, egress.ErrPortDenied) {
			port := u.Port()
			return errs.Invalid(path, "port %s is not allowed: webhooks may use only ports 80 and 443 (unless SLUICE_EGRESS_ALLOW_CIDRS allows the address)", port)
		}
		if errors.Is(err, egress.ErrDenied) {
			return errs.Invalid(path, "resolves to an address webhooks may not reach (loopback, private, link-local or metadata)")
		}
		return errs.Invalid(path, "cannot be resolved: %v", err)
	}
	return nil
}

func checkEventTypes(types []string) error {
	for i, t := range types {
		if !eventtype.Type(t).Delivered() {
			return errs.Invalid(fmt.Sprintf("input.eventTypes[%d]", i), "unknown event type %q (see webhookEventTypes)", t)
		}
	}
	return nil
}

// CreateWebhookEndpoint registers an endpoint and returns its secret, once.
func (s *Service) CreateWebhookEndpoint(ctx context.Context, rawURL string, eventTypes []string, description string) (*ent.WebhookEndpoint, string, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	if err := s.checkEndpointURL(ctx, rawURL, "input.url"); err != nil {
		return nil, "", err
	}
	if err := checkEventTypes(eventTypes); err != nil {
		return nil, "", err
	}
	if len(description) > 500 {
		return nil, "", errs.Invalid("input.description", "must be at most 500 characters")
	}
	id := ids.New(ids.WebhookEndpoint)
	secret := NewSecret()
	sealed, err := s.vault.SealWebhookSecret(ctx, c, id, 1, secret)
	if err != nil {
		return nil, "", err
	}
	ep, err := c.WebhookEndpoint.Create().SetID(id).SetURL(rawURL).SetEventTypes(eventTypes).SetDescription(description).
		SetSecret(sealed).SetSecretVersion(1).SetCreatedBy(v.Subject).Save(ctx)
	if err != nil {
		return nil, "", err
	}
	return ep, secret, audit.Record(ctx, c, "webhook_endpoint.create", "WebhookEndpoint", ep.ID, map[string]any{"url": rawURL, "eventTypes": eventTypes})
}

// UpdateWebhookEndpoint changes an endpoint. Enabling it clears the reason
// it was disabled and its failure streak.
func (s *Service) UpdateWebhookEndpoint(ctx context.Context, id string, rawURL *string, eventTypes []string, enabled *bool, description *string) (*ent.WebhookEndpoint, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	ep, err := c.WebhookEndpoint.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("webhook endpoint", id)
	}
	if err != nil {
		return nil, err
	}
	u := ep.Update()
	meta := map[string]any{}
	if rawURL != nil {
		if err := s.checkEndpointURL(ctx, *rawURL, "input.url"); err != nil {
			return nil, err
		}
		u.SetURL(*rawURL)
		meta["url"] = *rawURL
	}
	if eventTypes != nil {
		if err := checkEventTypes(eventTypes); err != nil {
			return nil, err
		}
		u.SetEventTypes(eventTypes)
		meta["eventTypes"] = eventTypes
	}
	if description != nil {
		if len(*description) > 500 {
			return nil, errs.Invalid("input.description", "must be at most 500 characters")
		}
		u.SetDescription(*description)
	}
	if enabled != nil {
		u.SetEnabled(*enabled)
		if *enabled {
			u.ClearDisabledReason().ClearFailingSince()
		} else {
			u.SetDisabledReason("disabled by " + viewer.FromContext(ctx).Subject)
		}
		meta["enabled"] = *enabled
	}
	ep, err = u.Save(ctx)
	if err != nil {
		return nil, err
	}
	return ep, audit.Record(ctx, c, "webhook_endpoint.update", "WebhookEndpoint", ep.ID, meta)
}

// RotateWebhookSecret issues a new secret; the old one keeps signing until
// the grace period ends.
func (s *Service) RotateWebhookSecret(ctx context.Context, id string) (*ent.WebhookEndpoint, string, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	ep, err := c.WebhookEndpoint.Query().Where(webhookendpoint.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, "", errs.NotFoundf("webhook endpoint", id)
	}
	if err != nil {
		return nil, "", err
	}
	secret := NewSecret()
	next := ep.SecretVersion + 1
	sealed, err := s.vault.SealWebhookSecret(ctx, c, ep.ID, next, secret)
	if err != nil {
		return nil, "", err
	}
	expires := s.now().Add(s.opts.grace())
	ep, err = ep.Update().SetPreviousSecret(ep.Secret).SetPreviousSecretExpiresAt(expires).
		SetSecret(sealed).SetSecretVersion(next).Save(ctx)
	if err != nil {
		return nil, "", err
	}
	return ep, secret, audit.Record(ctx, c, "webhook_endpoint.rotate_secret", "WebhookEndpoint", ep.ID, map[string]any{"previousValidUntil": expires.Format(time.RFC3339)})
}

// DeleteWebhookEndpoint removes an endpoint and its delivery records.
func (s *Service) DeleteWebhookEndpoint(ctx context.Context, id string) (string, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.WebhookEndpoint.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("webhook endpoint", id)
	} else if err != nil {
		return "", err
	}
	return id, audit.Record(ctx, c, "webhook_endpoint.delete", "WebhookEndpoint", id, nil)
}

// RedeliverWebhookDelivery sends a delivery again, with the same webhook-id.
func (s *Service) RedeliverWebhookDelivery(ctx context.Context, id string) (*ent.WebhookDelivery, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	d, err := c.WebhookDelivery.Query().Where(webhookdelivery.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("webhook delivery", id)
	}
	if err != nil {
		return nil, err
	}
	if d.Status == webhookdelivery.StatusPending {
		return nil, errs.E(errs.Conflict, "delivery %s is still pending", id)
	}
	ep, err := c.WebhookEndpoint.Get(ctx, d.EndpointID)
	if err != nil {
		return nil, err
	}
	if !ep.Enabled {
		return nil, errs.E(errs.Conflict, "endpoint %s is disabled; enable it before redelivering", ep.ID)
	}
	now := s.now()
	d, err = d.Update().SetStatus(webhookdelivery.StatusPending).SetNextAttemptAt(now).ClearDeliveredAt().Save(ctx)
	if err != nil {
		return nil, err
	}
	s.dispatchAfterCommit(ctx, []tasks.Task{deliveryTask(v.TenantID, d, now)})
	return d, audit.Record(ctx, c, "webhook_delivery.redeliver", "WebhookDelivery", d.ID, map[string]any{"webhookID": d.WebhookID})
}

// deliveryTask is the task that wakes a worker for a delivery's next
// attempt; each attempt has a task id of its own.
func deliveryTask(tenantID string, d *ent.WebhookDelivery, at time.Time) tasks.Task {
	return tasks.Task{Kind: tasks.KindWebhook, TenantID: tenantID, RunID: d.RunID, ID: d.ID, At: at, Variant: "a" + strconv.Itoa(d.Attempts)}
}
