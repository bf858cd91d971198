package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/tasks"
)

// Record writes, in the transaction of c that commits a run's new events,
// a delivery for each webhook-worthy event and each endpoint that wants it
// (an outbox), and returns the tasks that wake their first attempts, to be
// sent after commit. endpointsVersion is the tenant's webhooks_version as
// read with the run's lock, or -1 when unknown (see enabledEndpoints).
func (s *Service) Record(ctx context.Context, c *ent.Client, r *ent.Run, endpointsVersion int64, events []*ent.RunEvent, now time.Time) ([]tasks.Task, error) {
	if r.Mode == run.ModeSandbox {
		// A sandbox replay is a rehearsal on real data: it notifies no one,
		// as it calls no side effect.
		return nil, nil
	}
	var wanted []*ent.RunEvent
	for _, ev := range events {
		if eventtype.Type(ev.Type).Delivered() {
			wanted = append(wanted, ev)
		}
	}
	if len(wanted) == 0 {
		return nil, nil
	}
	endpoints, err := s.enabledEndpoints(ctx, c, r.TenantID, endpointsVersion)
	if err != nil || len(endpoints) == 0 {
		return nil, err
	}
	var creates []*ent.WebhookDeliveryCreate
	for _, ev := range wanted {
		// The timestamp is the event's `at` as stored (Postgres keeps
		// microseconds), so it equals the `at` clients read from the run.
		payload := map[string]any{
			"type":      ev.Type,
			"timestamp": ev.At.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano),
			"data":      webhookData(r, ev),
		}
		for _, ep := range endpoints {
			if len(ep.EventTypes) > 0 && !slices.Contains(ep.EventTypes, ev.Type) {
				continue
			}
			id := ids.New(ids.WebhookDelivery)
			creates = append(creates, c.WebhookDelivery.Create().SetID(id).
				SetEndpointID(ep.ID).SetWebhookID("msg_"+strings.TrimPrefix(id, ids.WebhookDelivery+"_")).
				SetEventType(ev.Type).SetRunID(r.ID).SetSeq(ev.Seq).SetPayload(payload).SetNextAttemptAt(now))
		}
	}
	if len(creates) == 0 {
		return nil, nil
	}
	list, err := c.WebhookDelivery.CreateBulk(creates...).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("record webhook deliveries: %w", err)
	}
	out := make([]tasks.Task, len(list))
	for i, d := range list {
		out[i] = deliveryTask(r.TenantID, d, now)
	}
	return out, nil
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
// to an endpoint bumps in the transaction of the change (an Ent hook of the
// webhook endpoint schema), and which the run state machine read with the
// run's lock. A cached list of the same version is the
// list this transaction would read.
func (s *Service) enabledEndpoints(ctx context.Context, c *ent.Client, tenantID string, version int64) ([]*ent.WebhookEndpoint, error) {
	if version >= 0 {
		if l, ok := s.endpointLists.Load(tenantID); ok && l.(endpointList).version == version {
			return l.(endpointList).endpoints, nil
		}
	}
	endpoints, err := c.WebhookEndpoint.Query().Where(webhookendpoint.Enabled(true)).
		Select(webhookendpoint.FieldID, webhookendpoint.FieldEventTypes).All(ctx)
	if err != nil {
		return nil, err
	}
	if version >= 0 {
		// Read after the version: at worst newer than it, which only costs
		// a read when the newer version is seen.
		s.endpointLists.Store(tenantID, endpointList{version: version, endpoints: endpoints})
	}
	return endpoints, nil
}

// webhookData is the data of a webhook payload: the event with the run's
// identity, so receivers can order (seq) and route without a lookup.
func webhookData(r *ent.Run, ev *ent.RunEvent) map[string]any {
	data := map[string]any{
		"tenantID":      r.TenantID,
		"runID":         r.ID,
		"workflowID":    r.WorkflowID,
		"versionID":     r.VersionID,
		"environmentID": r.EnvironmentID,
		"runStatus":     string(r.Status),
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

// Event is a tenant event (eventtype.Tenant, or a run event raised outside
// a run's transaction) to deliver by webhook.
type Event struct {
	Type eventtype.Type
	// Data is the payload's data; the tenant id is added.
	Data map[string]any
	// EndpointIDs, when set, are the only endpoints the event goes to,
	// whether or not they chose its type: an escalation level names the
	// endpoints it pages. Disabled or unknown ones are skipped. When empty,
	// every enabled endpoint that wants the type receives it.
	EndpointIDs []string
}

// RecordEvent writes, in the transaction of c (the caller's tenant
// transaction, which commits the change the event reports), one delivery
// per endpoint that gets ev, and wakes their first attempts after commit.
// It returns the ids of the deliveries written. The payload has the shape
// of a run event's ({type, timestamp, data}) with no run id or seq.
func (s *Service) RecordEvent(ctx context.Context, c *ent.Client, tenantID string, ev Event, now time.Time) ([]string, error) {
	q := c.WebhookEndpoint.Query().Where(webhookendpoint.Enabled(true))
	if len(ev.EndpointIDs) > 0 {
		q = q.Where(webhookendpoint.IDIn(ev.EndpointIDs...))
	}
	endpoints, err := q.Select(webhookendpoint.FieldID, webhookendpoint.FieldEventTypes).All(ctx)
	if err != nil {
		return nil, fmt.Errorf("read webhook endpoints: %w", err)
	}
	data := make(map[string]any, len(ev.Data)+1)
	for k, v := range ev.Data {
		data[k] = v
	}
	data["tenantID"] = tenantID
	payload := map[string]any{
		"type":      string(ev.Type),
		"timestamp": now.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano),
		"data":      data,
	}
	var creates []*ent.WebhookDeliveryCreate
	for _, ep := range endpoints {
		if len(ev.EndpointIDs) == 0 && len(ep.EventTypes) > 0 && !slices.Contains(ep.EventTypes, string(ev.Type)) {
			continue
		}
		id := ids.New(ids.WebhookDelivery)
		creates = append(creates, c.WebhookDelivery.Create().SetID(id).
			SetEndpointID(ep.ID).SetWebhookID("msg_"+strings.TrimPrefix(id, ids.WebhookDelivery+"_")).
			SetEventType(string(ev.Type)).SetPayload(payload).SetNextAttemptAt(now))
	}
	if len(creates) == 0 {
		return nil, nil
	}
	list, err := c.WebhookDelivery.CreateBulk(creates...).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("record webhook deliveries: %w", err)
	}
	out := make([]string, len(list))
	ts := make([]tasks.Task, len(list))
	for i, d := range list {
		out[i] = d.ID
		ts[i] = deliveryTask(tenantID, d, now)
	}
	s.dispatchAfterCommit(ctx, ts)
	return out, nil
}
