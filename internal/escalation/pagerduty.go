package escalation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/retryafter"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// sendClaim is how long a try holds its send: the reconciler leaves the
// send alone meanwhile. It outlasts the call's timeout.
const sendClaim = time.Minute

// pdTimeout bounds one call to PagerDuty.
const pdTimeout = 15 * time.Second

// Send makes the next try of a PagerDuty send (the handler of its queue
// task): it claims the send, posts the event with the routing key from the
// vault, and records the try. 2xx (PagerDuty answers 202) is success; 429,
// 5xx and network errors are retried with backoff (Retry-After honoured)
// until PagerDutyMaxAttempts; other statuses fail the send.
func (s *Service) Send(ctx context.Context, tenantID, sendID string) error {
	ctx = viewer.SystemContext(ctx, tenantID)
	var claimed *ent.PagerDutySend
	var body []byte
	var eventsURL string
	err := store.InTenant(ctx, s.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		p, err := c.PagerDutySend.Query().Where(pagerdutysend.ID(sendID)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		now := s.now()
		if p.Status != pagerdutysend.StatusPending || p.NextAttemptAt == nil {
			return nil
		}
		if p.NextAttemptAt.After(now) {
			// Woken early (the queue schedules in whole seconds), or
			// another try holds it: wake again when due.
			t := sendTask(tenantID, p)
			t.Variant += "r" + now.Format("150405.000")
			s.dispatchAfterCommit(ctx, t)
			return nil
		}
		// PagerDuty applies events in the order it gets them: an
		// acknowledge or resolve waits for the trigger before it.
		earlier, err := c.PagerDutySend.Query().Where(pagerdutysend.EscalationID(p.EscalationID), pagerdutysend.CredentialID(p.CredentialID),
			pagerdutysend.StatusEQ(pagerdutysend.StatusPending), pagerdutysend.IDLT(p.ID)).Exist(ctx)
		if err != nil {
			return err
		}
		if earlier {
			p, err = p.Update().SetNextAttemptAt(now.Add(time.Second)).Save(ctx)
			if err != nil {
				return err
			}
			t := sendTask(tenantID, p)
			t.Variant += "w" + now.Format("150405.000")
			s.dispatchAfterCommit(ctx, t)
			return nil
		}
		typ, secret, err := s.vault.OpenCredentialByID(ctx, c, p.CredentialID)
		key, _ := secret["routingKey"].(string)
		// A credential may name its own events URL (an EU account's
		// https://events.eu.pagerduty.com/v2/enqueue); else the
		// configured one.
		if u, _ := secret["eventsURL"].(string); u != "" {
			eventsURL = u
		} else {
			eventsURL = s.pdURL
		}
		if err != nil || typ != credential.TypePagerduty || key == "" {
			msg := "the pagerduty credential is gone or has no routing key"
			return s.record(ctx, tenantID, p, 0, &msg, 0, now, false)
		}
		ev := map[string]any{"routing_key": key, "event_action": string(p.Action), "dedup_key": p.DedupKey, "client": "Sluice"}
		if p.Action == pagerdutysend.ActionTrigger && p.Payload != nil {
			ev["payload"] = p.Payload
		}
		if body, err = json.Marshal(ev); err != nil {
			return err
		}
		if err := p.Update().SetNextAttemptAt(now.Add(sendClaim)).Exec(ctx); err != nil {
			return err
		}
		claimed = p
		return nil
	})
	if err != nil || claimed == nil {
		return err
	}
	start := time.Now()
	status, hdr, callErr := s.post(ctx, eventsURL, body)
	latency := time.Since(start).Milliseconds()
	return store.InTenant(ctx, s.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		p, err := c.PagerDutySend.Query().Where(pagerdutysend.ID(sendID)).ForUpdate().Only(ctx)
		if err != nil {
			return err
		}
		if p.Status != pagerdutysend.StatusPending || p.Attempts != claimed.Attempts {
			return nil // another try recorded first
		}
		now := s.now()
		var msg *string
		if callErr != nil {
			m := callErr.Error()
			msg = &m
		}
		retryAfter := time.Duration(0)
		if status == http.StatusTooManyRequests || status >= 500 {
			retryAfter = retryafter.FromHeader(hdr, now)
		}
		retryable := status == 0 || status == http.StatusTooManyRequests || status >= 500
		return s.record(ctx, tenantID, p, status, msg, latency, now, retryable, retryAfter)
	})
}

// record writes a try's outcome and schedules the next try when there is one.
func (s *Service) record(ctx context.Context, tenantID string, p *ent.PagerDutySend, status int, msg *string, latency int64, now time.Time, retryable bool, retryAfter ...time.Duration) error {
	a := spec.Attempt{At: now, Error: msg, LatencyMs: latency}
	if status != 0 {
		a.StatusCode = &status
	}
	n := p.Attempts + 1
	u := p.Update().SetAttempts(n).AppendAttemptList([]spec.Attempt{a}).SetUpdatedAt(now)
	if status != 0 {
		u.SetLastStatusCode(status)
	}
	if msg != nil {
		u.SetLastError(*msg)
	} else if status != 0 && (status < 200 || status > 299) {
		u.SetLastError(fmt.Sprintf("PagerDuty answered %d", status))
	}
	switch {
	case status >= 200 && status <= 299:
		u.SetStatus(pagerdutysend.StatusSent).SetSentAt(now).ClearNextAttemptAt().ClearLastError()
	case retryable && n < s.maxTries:
		d := s.retry.Delay(n, nil)
		if len(retryAfter) > 0 && retryAfter[0] > d {
			d = retryAfter[0]
		}
		u.SetNextAttemptAt(now.Add(d))
	default:
		u.SetStatus(pagerdutysend.StatusFailed).ClearNextAttemptAt()
		s.log.WarnContext(ctx, "pagerduty send failed", "tenant_id", tenantID, "send_id", p.ID, "status", status, "attempts", n)
	}
	p, err := u.Save(ctx)
	if err != nil {
		return err
	}
	if p.Status == pagerdutysend.StatusPending {
		s.dispatchAfterCommit(ctx, sendTask(tenantID, p))
	}
	return nil
}

// post sends one event; status 0 means no response.
func (s *Service) post(ctx context.Context, eventsURL string, body []byte) (int, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, pdTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, eventsURL, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header, nil
}
