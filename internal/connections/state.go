package connections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// settingsOf reads a connection's settings from its credential's current
// version.
func (s *Service) settingsOf(ctx context.Context, c *ent.Client, credentialID string) (Settings, error) {
	typ, secret, err := s.o.Vault.OpenCredentialByID(ctx, c, credentialID)
	if err != nil {
		return Settings{}, err
	}
	if typ != credential.TypeOauth2 {
		return Settings{}, fmt.Errorf("credential %s is not oauth2", credentialID)
	}
	// Stored settings were validated when written; the scheme rule may
	// have tightened since, which the token request's egress still checks.
	st, err := ParseSettings(secret, "secret", false)
	if err != nil {
		return Settings{}, err
	}
	return st, nil
}

// storeTokens seals ts as the connection's next token version and marks it
// active, recording how it got them (refresh or authorization).
func (s *Service) storeTokens(ctx context.Context, c *ent.Client, row *ent.Connection, ts tokenSet, how string, now time.Time) error {
	plain, err := json.Marshal(ts)
	if err != nil {
		return err
	}
	defer clear(plain)
	version := row.TokenVersion + 1
	sealed, err := s.o.Vault.SealConnectionTokens(ctx, c, row.CredentialID, version, plain)
	if err != nil {
		return err
	}
	u := c.Connection.UpdateOneID(row.ID).
		SetTokens(sealed).SetTokenVersion(version).
		SetStatus(connection.StatusActive).SetConsecutiveFailures(0).ClearLastError().
		SetLastRefreshedAt(now).SetNextRefreshAt(nextRefresh(ts.Expiry, now, now, s.o.IdleRefresh))
	if ts.Expiry.IsZero() {
		u.ClearExpiresAt()
	} else {
		u.SetExpiresAt(ts.Expiry)
	}
	if ts.raw != nil {
		if sc, ok := ts.raw.Extra("scope").(string); ok && sc != "" {
			u.SetGrantedScopes(strings.FieldsFunc(sc, func(r rune) bool { return r == ' ' || r == ',' }))
		}
		if acct := accountOf(ts.raw.Extra); acct != "" {
			u.SetAccount(acct)
		}
	}
	updated, err := u.Save(ctx)
	if err != nil {
		return fmt.Errorf("store connection tokens: %w", err)
	}
	s.remember(cacheKey(row.TenantID, row.CredentialID), ts, &now, version)
	if row.Status == connection.StatusActive {
		return nil
	}
	// A change of status: audited, and announced when it recovered.
	if err := audit.Record(ctx, c, "credential.connection."+how, "Credential", row.CredentialID,
		map[string]any{"from": string(row.Status), "to": string(updated.Status)}); err != nil {
		return err
	}
	if row.Status == connection.StatusDegraded || row.Status == connection.StatusReauthorizationRequired {
		return s.announce(ctx, c, eventtype.CredentialRestored, updated, map[string]any{"previousStatus": string(row.Status)}, now)
	}
	return nil
}

// accountOf is the account identity a token response carries, if any.
func accountOf(extra func(string) any) string {
	for _, k := range []string{"account", "email", "user_id", "userId", "id", "sub"} {
		if v, ok := extra(k).(string); ok && v != "" {
			return v
		}
	}
	return ""
}

// recordFailure records a failed refresh and returns the error for the
// caller: steps.ErrNeedsAuthorization when only a person can fix it
// (reauthorization_required, announced once per transition), otherwise a
// transient step error (degraded, refreshed again after a backoff).
func (s *Service) recordFailure(ctx context.Context, c *ent.Client, row *ent.Connection, cause error, now time.Time) error {
	var pe *providerError
	if !errors.As(cause, &pe) {
		pe = &providerError{msg: cause.Error(), transient: true}
	}
	failures := row.ConsecutiveFailures + 1
	u := c.Connection.UpdateOneID(row.ID).SetConsecutiveFailures(failures).SetLastError(pe.msg)
	if pe.reauth {
		updated, err := u.SetStatus(connection.StatusReauthorizationRequired).ClearNextRefreshAt().Save(ctx)
		if err != nil {
			return err
		}
		if row.Status != connection.StatusReauthorizationRequired {
			if err := audit.Record(ctx, c, "credential.connection.reauthorization_required", "Credential", row.CredentialID,
				map[string]any{"from": string(row.Status), "error": pe.msg}); err != nil {
				return err
			}
			if err := s.announce(ctx, c, eventtype.CredentialReauthorizationRequired, updated, map[string]any{"previousStatus": string(row.Status)}, now); err != nil {
				return err
			}
		}
		s.o.Log.WarnContext(ctx, "connection needs reauthorization", "credential_id", row.CredentialID, "error", pe.msg)
		return steps.ErrNeedsAuthorization
	}
	updated, err := u.SetStatus(connection.StatusDegraded).SetNextRefreshAt(now.Add(failureBackoff.Delay(failures, nil))).Save(ctx)
	if err != nil {
		return err
	}
	if row.Status != connection.StatusDegraded {
		if err := audit.Record(ctx, c, "credential.connection.degraded", "Credential", row.CredentialID,
			map[string]any{"from": string(row.Status), "error": pe.msg}); err != nil {
			return err
		}
		if err := s.announce(ctx, c, eventtype.CredentialExpiring, updated, nil, now); err != nil {
			return err
		}
	}
	s.o.Log.WarnContext(ctx, "connection refresh failed", "credential_id", row.CredentialID, "failures", failures, "error", pe.msg)
	return &steps.Error{Class: steps.Transient, Message: "oauth2 connection: " + pe.msg}
}

// announce records a tenant webhook event about a connection: metadata
// only, never a token or secret.
func (s *Service) announce(ctx context.Context, c *ent.Client, typ eventtype.Type, row *ent.Connection, extra map[string]any, now time.Time) error {
	if s.o.Events == nil {
		return nil
	}
	data := map[string]any{"credentialID": row.CredentialID, "environmentID": row.EnvironmentID, "status": string(row.Status)}
	if cred, err := c.Credential.Get(ctx, row.CredentialID); err == nil {
		data["name"] = cred.Name
	}
	if row.ExpiresAt != nil {
		data["expiresAt"] = row.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	if row.LastError != nil {
		data["lastError"] = *row.LastError
	}
	for k, v := range extra {
		data[k] = v
	}
	_, err := s.o.Events.RecordEvent(ctx, c, viewer.FromContext(ctx).TenantID, webhook.Event{Type: typ, Data: data}, now)
	return err
}

// notFound is the error for a credential id the viewer may not see.
func notFound(id string) error { return errs.NotFoundf("credential", id) }
