package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/apikey"
	"github.com/sluicehq/sluice/ent/member"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// lastUsedResolution bounds how often a key's lastUsedAt is written: at most
// once a minute per key, so authentication stays a read.
const lastUsedResolution = time.Minute

// Authenticator turns a bearer credential into a viewer.
type Authenticator struct {
	jwt    *JWTVerifier
	client *ent.Client
	now    func() time.Time
}

// NewAuthenticator verifies JWTs with jwt and API keys against client (the
// app role's pool).
func NewAuthenticator(jwt *JWTVerifier, client *ent.Client) *Authenticator {
	return &Authenticator{jwt: jwt, client: client, now: time.Now}
}

func unauthenticated(format string, args ...any) error {
	return errs.E(errs.Unauthenticated, format, args...)
}

// Authenticate reads an Authorization header value ("Bearer ...").
func (a *Authenticator) Authenticate(ctx context.Context, header string) (*viewer.Viewer, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return nil, unauthenticated("a bearer token is required")
	}
	return a.AuthenticateToken(ctx, strings.TrimSpace(token))
}

// AuthenticateToken checks a bare token: an API key or a JWT.
func (a *Authenticator) AuthenticateToken(ctx context.Context, token string) (*viewer.Viewer, error) {
	if strings.HasPrefix(token, APIKeyPrefix) {
		return a.apiKey(ctx, token)
	}
	claims, err := a.jwt.Verify(token)
	if err != nil {
		return nil, unauthenticated("invalid token")
	}
	if !ids.Valid(claims.TenantID, ids.Tenant) {
		return nil, unauthenticated("invalid token: tid is not a tenant id")
	}
	v := &viewer.Viewer{TenantID: claims.TenantID, Subject: claims.Subject}
	for _, r := range claims.Roles {
		if viewer.KnownRole(r) && !slices.Contains(v.Roles, r) {
			v.Roles = append(v.Roles, r)
		}
	}
	if len(v.Roles) == 0 {
		roles, err := a.memberRoles(ctx, v.TenantID, v.Subject)
		if err != nil {
			return nil, err
		}
		v.Roles = roles
	}
	if len(v.Roles) == 0 {
		return nil, errs.E(errs.Forbidden, "the token grants no role in this tenant")
	}
	return v, nil
}

func (a *Authenticator) memberRoles(ctx context.Context, tenantID, subject string) ([]string, error) {
	var roles []string
	sys := viewer.SystemContext(ctx, tenantID)
	err := store.InTenant(sys, a.client, func(ctx context.Context) error {
		m, err := ent.FromContext(ctx).Member.Query().Where(member.Subject(subject)).Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		roles = m.Roles
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load member roles: %w", err)
	}
	return roles, nil
}

var errKeyRejected = errors.New("auth: api key rejected")

func (a *Authenticator) apiKey(ctx context.Context, token string) (*viewer.Viewer, error) {
	tid := tenantOfAPIKey(token)
	if tid == "" {
		return nil, unauthenticated("invalid API key")
	}
	var v *viewer.Viewer
	sys := viewer.SystemContext(ctx, tid)
	err := store.InTenant(sys, a.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		key, err := c.APIKey.Query().Where(apikey.TokenHash(HashAPIKey(token))).Only(ctx)
		if ent.IsNotFound(err) {
			return errKeyRejected
		}
		if err != nil {
			return err
		}
		now := a.now()
		if key.RevokedAt != nil || (key.ExpiresAt != nil && !key.ExpiresAt.After(now)) {
			return errKeyRejected
		}
		v = &viewer.Viewer{TenantID: tid, Subject: "apikey:" + key.ID, Roles: key.Roles, APIKeyID: key.ID}
		if key.EnvironmentID != nil {
			v.EnvironmentID = *key.EnvironmentID
		}
		if key.LastUsedAt == nil || now.Sub(*key.LastUsedAt) > lastUsedResolution {
			return c.APIKey.UpdateOneID(key.ID).SetLastUsedAt(now.UTC()).Exec(ctx)
		}
		return nil
	})
	if errors.Is(err, errKeyRejected) {
		return nil, unauthenticated("invalid API key")
	}
	if err != nil {
		return nil, fmt.Errorf("check API key: %w", err)
	}
	return v, nil
}
