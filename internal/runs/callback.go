package runs

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Callbacks: every wait has a URL, `/callbacks/<token>`, that resolves it
// with the JSON object POSTed to it, without a bearer token: the token is
// the credential. It is single-use and stops working when the wait ends
// (its event came, its timeout passed, its run was cancelled or failed).

// CallbackPathPrefix is where the API serves callbacks.
const CallbackPathPrefix = "/callbacks/"

// ErrCallbackGone answers a callback whose wait is over: used, timed out
// or cancelled.
var ErrCallbackGone = errors.New("this callback was used or has expired")

// callbackTenant returns the tenant a callback token names, and false for
// a string that cannot be a token.
func callbackTenant(token string) (string, bool) {
	tenantID, mac, ok := strings.Cut(token, ".")
	if !ok || !ids.Valid(tenantID, ids.Tenant) || len(mac) != 43 {
		return "", false
	}
	return tenantID, true
}

// Callback resolves the wait whose callback token is token with data, in
// a transaction of the token's tenant. It fails with NOT_FOUND for a token
// that names no wait, and ErrCallbackGone when the wait is over.
func (e *Service) Callback(ctx context.Context, token string, data map[string]any) error {
	tenantID, ok := callbackTenant(token)
	if !ok {
		return errs.E(errs.NotFound, "no such callback")
	}
	if data == nil {
		data = map[string]any{}
	}
	ctx = viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: "callback", System: true})
	return store.InTenant(ctx, e.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		w, err := waitByTokenHash(ctx, hashToken(token))
		if err != nil {
			return err
		}
		if w == nil {
			return errs.E(errs.NotFound, "no such callback")
		}
		s, err := e.lockRunSteps(ctx, c, w.RunID, w.StepID)
		if err != nil {
			return err
		}
		s.deferEval = true
		if w, err = waitRowByID(ctx, tenantID, w.ID); err != nil {
			return err
		}
		sr := s.steps[w.StepID]
		if w.Status != waitPending || s.terminal() || sr == nil || sr.Status != steprun.StatusWaiting || sr.Attempts != w.Attempt ||
			sr.CurrentAttemptID == nil || !s.now.Before(w.ExpiresAt) {
			return ErrCallbackGone
		}
		out := encodeJSON(map[string]any{"event": w.Event, "id": w.ID, "data": data, "receivedAt": s.now.UTC().Format(time.RFC3339Nano)})
		if err := s.resolveWait(ctx, sr, w, out, nil, "callback"); err != nil {
			return err
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		return audit.Record(ctx, c, "wait.callback", "Run", w.RunID, map[string]any{"stepID": w.StepID, "waitID": w.ID})
	})
}

// CallbackPath returns the callback path of wait waitID for the caller in
// ctx: only roles that may send events see it (others get ""), since the
// token resolves the wait as an event would.
func (e *Service) CallbackPath(ctx context.Context, waitID string) (string, error) {
	v := viewer.FromContext(ctx)
	if v == nil || !v.Has(viewer.RoleOperator) || !ids.Valid(waitID, ids.EventWait) {
		return "", nil
	}
	c, err := store.Client(ctx)
	if err != nil {
		return "", err
	}
	token, err := e.callbackToken(ctx, c, v.TenantID, waitID)
	if err != nil {
		return "", err
	}
	return CallbackPathPrefix + token, nil
}

// DecodeCallbackBody reads a callback's body: a JSON object of at most
// MaxEventDataBytes, or nothing (an empty object).
func DecodeCallbackBody(body []byte) (map[string]any, error) {
	if len(body) > MaxEventDataBytes {
		return nil, errs.E(errs.Validation, "the body is more than 256 KiB")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return map[string]any{}, nil
	}
	var data map[string]any
	if err := json.Unmarshal(body, &data); err != nil || data == nil {
		return nil, errs.E(errs.Validation, "the body must be a JSON object")
	}
	return data, nil
}
