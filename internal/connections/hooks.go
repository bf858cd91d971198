package connections

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/internal/store"
)

// ValidateSettings checks an oauth2 secret's provider settings for the
// control plane, before anything is written (VALIDATION with the path).
func (s *Service) ValidateSettings(secret map[string]any, path string) error {
	_, err := ParseSettings(secret, path, s.o.RequireHTTPS)
	return err
}

// Created gives a new oauth2 credential its connection, in the
// credential's transaction: pending_authorization for the authorization
// code grant without a refresh token, active otherwise (tokens are
// fetched on first use).
func (s *Service) Created(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error {
	st, err := ParseSettings(secret, "input.secret", s.o.RequireHTTPS)
	if err != nil {
		return err
	}
	status := connection.StatusActive
	if st.Grant == GrantAuthorizationCode && st.RefreshToken == "" {
		status = connection.StatusPendingAuthorization
	}
	q := c.Connection.Create().SetCredentialID(cred.ID).SetEnvironmentID(cred.EnvironmentID).
		SetGrant(connection.Grant(st.Grant)).SetProvider(st.Provider).SetAuthURL(st.AuthURL).SetTokenURL(st.TokenURL).
		SetScopes(st.Scopes).SetExtraParams(st.ExtraParams).SetStatus(status)
	if status == connection.StatusActive {
		q.SetNextRefreshAt(s.o.Now().Add(s.o.IdleRefresh))
	}
	return q.Exec(ctx)
}

// Rotated follows a rotation of an oauth2 credential: new settings, and a
// connection that needed a person is active again when the new secret can
// give tokens by itself (client credentials, or a refresh token), with
// the runs waiting for it woken after commit.
func (s *Service) Rotated(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error {
	st, err := ParseSettings(secret, "input.secret", s.o.RequireHTTPS)
	if err != nil {
		return err
	}
	row, err := c.Connection.Query().Where(connection.CredentialID(cred.ID)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return s.Created(ctx, c, cred, secret)
	}
	if err != nil {
		return err
	}
	u := c.Connection.UpdateOneID(row.ID).SetGrant(connection.Grant(st.Grant)).SetProvider(st.Provider).SetAuthURL(st.AuthURL).
		SetTokenURL(st.TokenURL).SetScopes(st.Scopes).SetExtraParams(st.ExtraParams)
	selfSufficient := st.Grant == GrantClientCredentials || st.RefreshToken != ""
	if selfSufficient {
		// The new secret's refresh token (or client) replaces the stored
		// tokens; the next use refreshes.
		u.ClearTokens().SetTokenVersion(row.TokenVersion + 1).ClearExpiresAt().SetConsecutiveFailures(0).ClearLastError().
			SetNextRefreshAt(s.o.Now())
		if row.Status != connection.StatusActive {
			u.SetStatus(connection.StatusActive)
		}
	}
	if err := u.Exec(ctx); err != nil {
		return err
	}
	s.cache.drop(cacheKey(row.TenantID, row.CredentialID))
	if selfSufficient && needsPerson(row.Status) {
		tenantID, credID := row.TenantID, row.CredentialID
		store.AfterCommit(ctx, func() { s.wake(context.WithoutCancel(ctx), tenantID, credID) })
	}
	return nil
}

// Info is a connection's metadata as the API shows it: never a token or
// secret.
type Info struct {
	Status              string
	Grant               string
	Provider            string
	Scopes              []string
	GrantedScopes       []string
	Account             *string
	ExpiresAt           *time.Time
	LastRefreshedAt     *time.Time
	NextRefreshAt       *time.Time
	ConsecutiveFailures int
	LastError           *string
}

// InfoOf returns the connection of credential credentialID, or nil when it
// has none, read with c (the request's tenant transaction).
func InfoOf(ctx context.Context, c *ent.Client, credentialID string) (*Info, error) {
	row, err := c.Connection.Query().Where(connection.CredentialID(credentialID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &Info{Status: string(row.Status), Grant: string(row.Grant), Provider: row.Provider, Scopes: row.Scopes,
		GrantedScopes: row.GrantedScopes, Account: row.Account, ExpiresAt: row.ExpiresAt, LastRefreshedAt: row.LastRefreshedAt,
		NextRefreshAt: row.NextRefreshAt, ConsecutiveFailures: row.ConsecutiveFailures, LastError: row.LastError}, nil
}
