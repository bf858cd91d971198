package engine

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// WebhookOptions tune webhook delivery.
type WebhookOptions struct {
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

func (o WebhookOptions) scale() float64 {
	if o.ScheduleScale <= 0 {
		return 1
	}
	return o.ScheduleScale
}

func (o WebhookOptions) grace() time.Duration {
	if o.RotationGrace <= 0 {
		return 24 * time.Hour
	}
	return o.RotationGrace
}

// checkEndpointURL validates an endpoint URL and the addresses it resolves to.
func (e *Engine) checkEndpointURL(ctx context.Context, raw, path string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return errs.Invalid(path, "must be an absolute http(s) URL")
	}
	if u.User != nil {
		return errs.Invalid(path, "must not carry credentials")
	}
	if e.webhooks.RequireHTTPS && u.Scheme != "https" {
		return errs.Invalid(path, "must use https")
	}
	if err := egress.CheckURL(ctx, e.webhooks.Egress, raw, e.webhooks.RequireHTTPS); err != nil {
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

// sealWebhookSecret encrypts an endpoint secret like a credential version.
func (e *Engine) sealWebhookSecret(ctx context.Context, c *ent.Client, endpointID string, version int, secret string) ([]byte, error) {
	key, err := e.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	v := viewer.FromContext(ctx)
	return secrets.Seal(key, secrets.AAD{TenantID: v.TenantID, CredentialID: endpointID, Version: version}, []byte(secret))
}

func (e *Engine) openWebhookSecret(ctx context.Context, c *ent.Client, ep *ent.WebhookEndpoint, version int, sealed []byte) (string, error) {
	key, err := e.dataKey(ctx, c)
	if err != nil {
		return "", err
	}
	b, err := secrets.Open(key, secrets.AAD{TenantID: ep.TenantID, CredentialID: ep.ID, Version: version}, sealed)
	return string(b), err
}

// CreateWebhookEndpoint registers an endpoint and returns its secret, once.
func (e *Engine) CreateWebhookEndpoint(ctx context.Context, rawURL string, eventTypes []string, description string) (*ent.WebhookEndpoint, string, error) {
	v, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	if err := e.checkEndpointURL(ctx, rawURL, "input.url"); err != nil {
		return nil, "", err
	}
	if err := checkEventTypes(eventTypes); err != nil {
		return nil, "", err
	}
	if len(description) > 500 {
		return nil, "", errs.Invalid("input.description", "must be at most 500 characters")
	}
	id := ids.New(ids.WebhookEndpoint)
	secret := webhook.NewSecret()
	sealed, err := e.sealWebhookSecret(ctx, c, id, 1, secret)
	if err != nil {
		return nil, "", err
	}
	ep, err := c.WebhookEndpoint.Create().SetID(id).SetURL(rawURL).SetEventTypes(eventTypes).SetDescription(description).
		SetSecret(sealed).SetSecretVersion(1).SetCreatedBy(v.Subject).Save(ctx)
	if err != nil {
		return nil, "", err
	}
	return ep, secret, audit(ctx, c, "webhook_endpoint.create", "WebhookEndpoint", ep.ID, map[string]any{"url": rawURL, "eventTypes": eventTypes})
}

// UpdateWebhookEndpoint changes an endpoint. Enabling it clears the reason
// it was disabled and its failure streak.
func (e *Engine) UpdateWebhookEndpoint(ctx context.Context, id string, rawURL *string, eventTypes []string, enabled *bool, description *string) (*ent.WebhookEndpoint, error) {
	_, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
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
		if err := e.checkEndpointURL(ctx, *rawURL, "input.url"); err != nil {
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
	return ep, audit(ctx, c, "webhook_endpoint.update", "WebhookEndpoint", ep.ID, meta)
}

// RotateWebhookSecret issues a new secret; the old one keeps signing until
// the grace period ends.
func (e *Engine) RotateWebhookSecret(ctx context.Context, id string) (*ent.WebhookEndpoint, string, error) {
	_, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
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
	secret := webhook.NewSecret()
	next := ep.SecretVersion + 1
	sealed, err := e.sealWebhookSecret(ctx, c, ep.ID, next, secret)
	if err != nil {
		return nil, "", err
	}
	expires := e.now().Add(e.webhooks.grace())
	ep, err = ep.Update().SetPreviousSecret(ep.Secret).SetPreviousSecretExpiresAt(expires).
		SetSecret(sealed).SetSecretVersion(next).Save(ctx)
	if err != nil {
		return nil, "", err
	}
	return ep, secret, audit(ctx, c, "webhook_endpoint.rotate_secret", "WebhookEndpoint", ep.ID, map[string]any{"previousValidUntil": expires.Format(time.RFC3339)})
}

// DeleteWebhookEndpoint removes an endpoint and its delivery records.
func (e *Engine) DeleteWebhookEndpoint(ctx context.Context, id string) (string, error) {
	_, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.WebhookEndpoint.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("webhook endpoint", id)
	} else if err != nil {
		return "", err
	}
	return id, audit(ctx, c, "webhook_endpoint.delete", "WebhookEndpoint", id, nil)
}

// RedeliverWebhookDelivery sends a delivery again, with the same webhook-id.
func (e *Engine) RedeliverWebhookDelivery(ctx context.Context, id string) (*ent.WebhookDelivery, error) {
	v, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin, viewer.RoleOperator)
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
	now := e.now()
	d, err = d.Update().SetStatus(webhookdelivery.StatusPending).SetNextAttemptAt(now).ClearDeliveredAt().Save(ctx)
	if err != nil {
		return nil, err
	}
	e.dispatchAfterCommit(ctx, []Task{webhookTask(v.TenantID, d, now)})
	return d, audit(ctx, c, "webhook_delivery.redeliver", "WebhookDelivery", d.ID, map[string]any{"webhookID": d.WebhookID})
}

func webhookTask(tenantID string, d *ent.WebhookDelivery, at time.Time) Task {
	return Task{Kind: TaskWebhook, TenantID: tenantID, RunID: d.RunID, ID: d.ID, At: at, Variant: "a" + strconv.Itoa(d.Attempts)}
}

// enqueueWebhooks records a delivery for each webhook-worthy event and each
// endpoint that wants it, in the transaction that commits the events (an
// outbox), and sends the deliveries after commit.
func (s *runState) enqueueWebhooks(ctx context.Context, events []*ent.RunEvent) error {
	if s.run.Mode == run.ModeSandbox {
		// A sandbox replay is a rehearsal on real data: it notifies no one,
		// as it calls no side effect.
		return nil
	}
	var wanted []*ent.RunEvent
	for _, ev := range events {
		if eventtype.Type(ev.Type).Delivered() {
			wanted = append(wanted, ev)
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	endpoints, err := s.enabledEndpoints(ctx)
	if err != nil || len(endpoints) == 0 {
		return err
	}
	var creates []*ent.WebhookDeliveryCreate
	for _, ev := range wanted {
		// The timestamp is the event's `at` as stored (Postgres keeps
		// microseconds), so it equals the `at` clients read from the run.
		payload := map[string]any{
			"type":      ev.Type,
			"timestamp": ev.At.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano),
			"data":      s.webhookData(ev),
		}
		for _, ep := range endpoints {
			if len(ep.EventTypes) > 0 && !slices.Contains(ep.EventTypes, ev.Type) {
				continue
			}
			id := ids.New(ids.WebhookDelivery)
			creates = append(creates, s.c.WebhookDelivery.Create().SetID(id).
				SetEndpointID(ep.ID).SetWebhookID("msg_"+strings.TrimPrefix(id, ids.WebhookDelivery+"_")).
				SetEventType(ev.Type).SetRunID(s.run.ID).SetSeq(ev.Seq).SetPayload(payload).SetNextAttemptAt(s.now))
		}
	}
	if len(creates) == 0 {
		return nil
	}
	list, err := s.c.WebhookDelivery.CreateBulk(creates...).Save(ctx)
	if err != nil {
		return fmt.Errorf("record webhook deliveries: %w", err)
	}
	for _, d := range list {
		s.tasks = append(s.tasks, webhookTask(s.run.TenantID, d, s.now))
	}
	return nil
}

// endpointList is a tenant's enabled webhook endpoints (what deliveries are
// made from) as of its webhooks_version.
type endpointList struct {
	version   int64
	endpoints []*ent.WebhookEndpoint
}

// enabledEndpoints lists the tenant's enabled webhook endpoints. Most
// flushes that carry a run.* event would otherwise read them; the list is
// cached per tenant under the tenant's webhooks_version, which every change
// to an endpoint bumps in its own transaction (internal/store), and which
// was read with the run's lock. A cached list of the same version is the
// list this transaction would read.
func (s *runState) enabledEndpoints(ctx context.Context) ([]*ent.WebhookEndpoint, error) {
	tenantID := s.run.TenantID
	if s.webhooksKnown {
		if l, ok := s.e.endpointLists.Load(tenantID); ok && l.(endpointList).version == s.webhooksVersion {
			return l.(endpointList).endpoints, nil
		}
	}
	endpoints, err := s.c.WebhookEndpoint.Query().Where(webhookendpoint.Enabled(true)).
		Select(webhookendpoint.FieldID, webhookendpoint.FieldEventTypes).All(ctx)
	if err != nil {
		return nil, err
	}
	if s.webhooksKnown {
		// Read after the version: at worst newer than it, which only costs
		// a read when the newer version is seen.
		s.e.endpointLists.Store(tenantID, endpointList{version: s.webhooksVersion, endpoints: endpoints})
	}
	return endpoints, nil
}

// webhookData is the data of a webhook payload: the event with the run's
// identity, so receivers can order (seq) and route without a lookup.
func (s *runState) webhookData(ev *ent.RunEvent) map[string]any {
	data := map[string]any{
		"tenantID":      s.run.TenantID,
		"runID":         s.run.ID,
		"workflowID":    s.run.WorkflowID,
		"versionID":     s.run.VersionID,
		"environmentID": s.run.EnvironmentID,
		"runStatus":     string(s.run.Status),
		"seq":           ev.Seq,
		"eventID":       ev.ID,
	}
	if ev.StepID != nil {
		data["stepID"] = *ev.StepID
	}
	if ev.Attempt != nil {
		data["attempt"] = *ev.Attempt
	}
	if len(ev.Data) > 0 {
		data["details"] = ev.Data
	}
	return data
}
