package triggers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/trigger"
	"github.com/sluicehq/sluice/ent/triggerdelivery"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/store"
	spec "github.com/sluicehq/sluice/internal/triggerspec"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Outcomes of a delivery (TriggerDelivery.outcome).
const (
	OutcomeStarted       = "started"
	OutcomeDuplicate     = "duplicate"
	OutcomeFiltered      = "filtered"
	OutcomeUnverified    = "unverified"
	OutcomeInputRejected = "input_rejected"
)

// Response headers that tell the sender what happened.
const (
	HeaderDuplicate = "Sluice-Duplicate"
	HeaderFiltered  = "Sluice-Filtered"
	HeaderRun       = "Sluice-Run-Id"
	HeaderDelivery  = "Sluice-Delivery-Id"
)

// ErrNoTrigger answers a hook id that names no enabled trigger; the answer
// says nothing more (no tenant, no reason).
var ErrNoTrigger = errors.New("no trigger answers at this URL")

// Request is one POST to a trigger's URL.
type Request struct {
	HookID      string
	Header      http.Header
	Query       url.Values
	Body        []byte
	ContentType string
}

// Response is what the sender gets.
type Response struct {
	Status  int
	Headers map[string]string
	Body    map[string]any
}

// defaultWindow is how long a dedup key is remembered.
const defaultWindow = 24 * time.Hour

// route finds the tenant and trigger a hook id names. The app role cannot
// read triggers without a tenant; the policy trigger_hook_route lets a
// transaction that names one hook id (app.trigger_hook) read that one row.
func (s *Service) route(ctx context.Context, hookID string) (tenantID, triggerID string, err error) {
	tx, err := s.opts.Client.Tx(ctx)
	if err != nil {
		return "", "", err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, "SELECT set_config('app.trigger_hook', $1, true)", hookID); err != nil {
		return "", "", err
	}
	rows, err := tx.QueryContext(ctx, "SELECT tenant_id, id FROM triggers WHERE hook_id = $1 AND enabled", hookID)
	if err != nil {
		return "", "", err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return "", "", err
		}
		return "", "", ErrNoTrigger
	}
	if err := rows.Scan(&tenantID, &triggerID); err != nil {
		return "", "", err
	}
	return tenantID, triggerID, rows.Close()
}

// Receive handles one delivery: route, rate limit, verify, dedup, filter,
// map, record and start the run, in one transaction of the trigger's tenant.
func (s *Service) Receive(ctx context.Context, req Request) (Response, error) {
	if !validHookID(req.HookID) {
		return Response{}, ErrNoTrigger
	}
	tenantID, triggerID, err := s.route(ctx, req.HookID)
	if err != nil {
		return Response{}, err
	}
	ctx = viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: "trigger:" + triggerID, Roles: []string{viewer.RoleOperator}, System: true})
	var resp Response
	err = store.InTenant(ctx, s.opts.Client, func(ctx context.Context) error {
		resp, err = s.receive(ctx, triggerID, req)
		return err
	})
	return resp, err
}

func (s *Service) receive(ctx context.Context, triggerID string, req Request) (Response, error) {
	c := ent.FromContext(ctx)
	now := s.now()
	// The row lock serialises a trigger's deliveries: the rate limit and
	// the dedup check below see every earlier delivery committed.
	t, err := c.Trigger.Query().Where(trigger.ID(triggerID), trigger.HookID(req.HookID), trigger.Enabled(true)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return Response{}, ErrNoTrigger
	}
	if err != nil {
		return Response{}, err
	}
	if wait, ok := allow(t, now); !ok {
		secs := int(math.Ceil(wait.Seconds()))
		return Response{Status: http.StatusTooManyRequests, Headers: map[string]string{"Retry-After": strconv.Itoa(max(secs, 1))},
			Body: map[string]any{"error": "rate limited"}}, nil
	}
	// updatedAt keeps saying when the trigger's settings last changed.
	if err := c.Trigger.UpdateOne(t).SetRateTat(nextTAT(t, now)).SetUpdatedAt(t.UpdatedAt).Exec(ctx); err != nil {
		return Response{}, err
	}

	d := c.TriggerDelivery.Create().SetTriggerID(t.ID).SetReceivedAt(now).SetBodyBytes(len(req.Body)).
		SetHeaders(storedHeaders(req.Header, t.Verification))
	secrets, err := s.secrets(ctx, c, t, now)
	if err != nil {
		return Response{}, err
	}
	if err := Verify(t.Verification, secrets, req.Header, req.Body, now); err != nil {
		if !IsUnverified(err) {
			return Response{}, err
		}
		// Recorded without the body: nothing unverified is kept or run.
		rec, err := d.SetVerified(false).SetOutcome(OutcomeUnverified).SetReason(truncate(err.Error(), 2000)).Save(ctx)
		if err != nil {
			return Response{}, err
		}
		return Response{Status: http.StatusUnauthorized, Headers: map[string]string{HeaderDelivery: rec.ID},
			Body: map[string]any{"error": "the request did not verify"}}, nil
	}
	d.SetVerified(true).SetBody(req.Body)
	act := newActivation(headerMap(req.Header), req.Query, req.Body, req.ContentType)

	key, err := dedupKey(ctx, t, req, act)
	if err != nil {
		return s.record(ctx, d.SetOutcome(OutcomeInputRejected).SetReason(truncate("dedup key: "+err.Error(), 2000)), http.StatusAccepted, nil)
	}
	claim := claimOf(key)
	window := defaultWindow
	if t.Dedup.WindowSeconds > 0 {
		window = time.Duration(t.Dedup.WindowSeconds) * time.Second
	}
	// A key older than the window is free again.
	if _, err := c.TriggerDelivery.Update().Where(triggerdelivery.TriggerID(t.ID), triggerdelivery.DedupClaim(claim),
		triggerdelivery.ReceivedAtLT(now.Add(-window))).ClearDedupClaim().Save(ctx); err != nil {
		return Response{}, err
	}
	d.SetDedupKey(truncate(key, 512))
	first, err := c.TriggerDelivery.Query().Where(triggerdelivery.TriggerID(t.ID), triggerdelivery.DedupClaim(claim)).Only(ctx)
	switch {
	case err == nil:
		d.SetDuplicate(true).SetOutcome(OutcomeDuplicate).SetNillableRunID(first.RunID).SetReason("duplicate of " + first.ID)
		return s.record(ctx, d, http.StatusOK, map[string]string{HeaderDuplicate: "true"})
	case !ent.IsNotFound(err):
		return Response{}, err
	}
	d.SetDedupClaim(claim)

	if t.EventFilter != "" {
		pass, err := evalFilter(ctx, t.EventFilter, act)
		if err != nil {
			return s.record(ctx, d.SetFiltered(true).SetOutcome(OutcomeFiltered).SetReason(truncate("filter: "+err.Error(), 2000)), http.StatusAccepted, map[string]string{HeaderFiltered: "true"})
		}
		if !pass {
			return s.record(ctx, d.SetFiltered(true).SetOutcome(OutcomeFiltered), http.StatusAccepted, map[string]string{HeaderFiltered: "true"})
		}
	}
	input, err := mapInput(ctx, t.InputMapping, act)
	if err == nil && hasNUL(input) {
		// Postgres cannot store it (jsonb), so no run could start.
		err = errors.New("the input holds a NUL character")
	}
	if err != nil {
		return s.record(ctx, d.SetOutcome(OutcomeInputRejected).SetReason(truncate("inputMapping: "+err.Error(), 2000)), http.StatusAccepted, nil)
	}
	// The same trigger and dedup key always name the same run: a retry
	// can never start a second one.
	idem := "trigger:" + t.ID + ":" + claim
	run, err := s.opts.Runs.StartRun(ctx, runs.StartRunInput{WorkflowID: t.WorkflowID, EnvironmentID: t.EnvironmentID, Input: input, IdempotencyKey: &idem})
	if err != nil {
		switch errs.CodeOf(err) {
		case errs.Validation, errs.NotFound, errs.Conflict, errs.Forbidden:
			// The event came and is kept; the run could not start (the
			// input does not match the schema, nothing is deployed...).
			return s.record(ctx, d.SetOutcome(OutcomeInputRejected).SetReason(truncate(err.Error(), 2000)), http.StatusAccepted, nil)
		}
		return Response{}, err
	}
	d.SetOutcome(OutcomeStarted).SetRunID(run.ID)
	return s.record(ctx, d, http.StatusAccepted, map[string]string{HeaderRun: run.ID})
}

func (s *Service) record(ctx context.Context, d *ent.TriggerDeliveryCreate, status int, headers map[string]string) (Response, error) {
	rec, err := d.Save(ctx)
	if err != nil {
		return Response{}, err
	}
	if headers == nil {
		headers = map[string]string{}
	}
	headers[HeaderDelivery] = rec.ID
	body := map[string]any{"deliveryID": rec.ID, "outcome": rec.Outcome}
	if rec.RunID != nil {
		body["runID"] = *rec.RunID
	}
	return Response{Status: status, Headers: headers, Body: body}, nil
}

// secrets opens the trigger's current secret and, within the overlap of a
// rotation, the previous one.
func (s *Service) secrets(ctx context.Context, c *ent.Client, t *ent.Trigger, now time.Time) ([]string, error) {
	cur, err := s.opts.Vault.OpenTriggerSecret(ctx, c, t.ID, t.SecretVersion, t.Secret)
	if err != nil {
		return nil, fmt.Errorf("open trigger secret: %w", err)
	}
	out := []string{cur}
	if t.PreviousSecret != nil && t.PreviousSecretExpiresAt != nil && now.Before(*t.PreviousSecretExpiresAt) {
		prev, err := s.opts.Vault.OpenTriggerSecret(ctx, c, t.ID, t.SecretVersion-1, *t.PreviousSecret)
		if err != nil {
			return nil, fmt.Errorf("open previous trigger secret: %w", err)
		}
		out = append(out, prev)
	}
	return out, nil
}

// dedupKey is the trigger's key expression, or the scheme's delivery id,
// or sha256 of the body.
func dedupKey(ctx context.Context, t *ent.Trigger, req Request, act activation) (string, error) {
	if t.Dedup.Key != "" {
		p, err := compile(t.Dedup.Key)
		if err != nil {
			return "", err
		}
		k, err := p.evalString(ctx, act)
		if err != nil {
			return "", err
		}
		if k == "" {
			return "", errors.New("the key is empty")
		}
		return k, nil
	}
	switch t.Verification.Scheme {
	case spec.SchemeStandardWebhooks:
		if id := req.Header.Get("webhook-id"); id != "" {
			return "webhook-id:" + id, nil
		}
	case spec.SchemeGitHub:
		if id := req.Header.Get("X-GitHub-Delivery"); id != "" {
			return "github-delivery:" + id, nil
		}
	case spec.SchemeStripe:
		if m, ok := act.vars["body"].(map[string]any); ok {
			if id, ok := m["id"].(string); ok && id != "" {
				return "stripe-event:" + id, nil
			}
		}
	case spec.SchemeSlack:
		// The Events API repeats event_id on its retries.
		if m, ok := act.vars["body"].(map[string]any); ok {
			if id, ok := m["event_id"].(string); ok && id != "" {
				return "slack-event:" + id, nil
			}
		}
	}
	sum := sha256.Sum256(req.Body)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func claimOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func evalFilter(ctx context.Context, expr string, act activation) (bool, error) {
	p, err := compile(expr)
	if err != nil {
		return false, err
	}
	return p.evalBool(ctx, act)
}

// mapInput makes the run input: the mapping's expression (an object), or
// its fields, or the body itself when it is a JSON object.
func mapInput(ctx context.Context, m spec.InputMapping, act activation) (map[string]any, error) {
	switch {
	case m.Expr != "":
		p, err := compile(m.Expr)
		if err != nil {
			return nil, err
		}
		v, err := p.eval(ctx, act)
		if err != nil {
			return nil, err
		}
		obj, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("the result is %T, not an object", v)
		}
		return obj, nil
	case len(m.Fields) > 0:
		out := make(map[string]any, len(m.Fields))
		for k, expr := range m.Fields {
			p, err := compile(expr)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			v, err := p.eval(ctx, act)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = v
		}
		return out, nil
	}
	obj, ok := act.vars["body"].(map[string]any)
	if !ok {
		return nil, errors.New("the body is not a JSON object (set inputMapping)")
	}
	return obj, nil
}

// droppedHeaders are never stored: they carry credentials.
var droppedHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "x-api-key": true,
}

// storedHeaders are the headers kept with a delivery, without credentials
// (and without a static token's header).
func storedHeaders(h http.Header, v spec.Verification) map[string]string {
	out := headerMap(h)
	for k := range out {
		if droppedHeaders[k] || v.Scheme == spec.SchemeStaticToken && strings.EqualFold(k, v.Header) {
			delete(out, k)
		}
	}
	return out
}

// truncate makes s storable as text: valid UTF-8, no NUL, at most n bytes
// (cut on a rune boundary).
func truncate(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// hasNUL reports whether a JSON value holds a NUL character in a string or
// a key.
func hasNUL(v any) bool {
	switch v := v.(type) {
	case string:
		return strings.ContainsRune(v, 0)
	case map[string]any:
		for k, e := range v {
			if strings.ContainsRune(k, 0) || hasNUL(e) {
				return true
			}
		}
	case []any:
		for _, e := range v {
			if hasNUL(e) {
				return true
			}
		}
	}
	return false
}
