package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/apikey"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// lastUsedResolution bounds how often a key's lastUsedAt is written: at most
// once a minute per key, so authentication stays a read.
const lastUsedResolution = time.Minute

// knownTenantsSize bounds the cache of tenant ids seen to exist.
const knownTenantsSize = 10000

// Authenticator turns a bearer credential into a viewer.
type Authenticator struct {
	jwt    *JWTVerifier
	client *ent.Client
	now    func() time.Time
	// knownTenants holds tenant ids found to exist, so a JWT costs no
	// query on the hot path. Only positive answers are kept: a tenant
	// created a moment ago is known at its first token. Tenants are never
	// deleted; a deletion would have to evict its id here.
	knownTenants *lru.Cache[string, struct{}]
}

// NewAuthenticator verifies JWTs with jwt and API keys against client (the
// app role's pool).
func NewAuthenticator(jwt *JWTVerifier, client *ent.Client) *Authenticator {
	known, _ := lru.New[string, struct{}](knownTenantsSize) // errors only on a size <= 0
	return &Authenticator{jwt: jwt, client: client, now: time.Now, knownTenants: known}
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
	known, err := a.tenantExists(ctx, claims.TenantID)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, unauthenticated("invalid token: tid names no tenant")
	}
	v := &viewer.Viewer{TenantID: claims.TenantID, Subject: claims.Subject, ExpiresAt: claims.ExpiresAt}
	var tokenRoles []string
	for _, r := range claims.Roles {
		if viewer.KnownRole(r) && !slices.Contains(tokenRoles, r) {
			tokenRoles = append(tokenRoles, r)
		}
	}
	memberRoles, isMember, err := a.memberRoles(ctx, v.TenantID, v.Subject)
	if err != nil {
		return nil, err
	}
	v.Roles = CombineRoles(tokenRoles, memberRoles, isMember)
	if len(v.Roles) == 0 {
		return nil, errs.E(errs.Forbidden, "the token grants no role in this tenant")
	}
	return v, nil
}

// tenantExists reports whether tenantID names a tenant (the app role reads
// only the tenant of its transaction).
func (a *Authenticator) tenantExists(ctx context.Context, tenantID string) (bool, error) {
	if _, ok := a.knownTenants.Get(tenantID); ok {
		return true, nil
	}
	var exists bool
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), a.client, func(ctx context.Context) error {
		var err error
		exists, err = ent.FromContext(ctx).Tenant.Query().Where(tenant.ID(tenantID)).Exist(ctx)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check tenant: %w", err)
	}
	if exists {
		a.knownTenants.Add(tenantID, struct{}{})
	}
	return exists, nil
}

// memberRoles reads the subject's member row in the tenant: one statement
// through sluice_member_roles (migrations), outside any transaction, so a
// request pays one round trip for it.
func (a *Authenticator) memberRoles(ctx context.Context, tenantID, subject string) (roles []string, found bool, err error) {
	rows, err := a.client.QueryContext(ctx, "SELECT sluice_member_roles($1, $2)", tenantID, subject)
	if err != nil {
		return nil, false, fmt.Errorf("load member roles: %w", err)
	}
	defer rows.Close()
	var raw []byte
	if rows.Next() {
		if err := rows.Scan(&raw); err != nil {
			return nil, false, fmt.Errorf("load member roles: %w", err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("load member roles: %w", err)
	}
	if raw == nil {
		return nil, false, nil
	}
	if err := json.Unmarshal(raw, &roles); err != nil {
		return nil, false, fmt.Errorf("member roles: %w", err)
	}
	return roles, true, nil
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
		if key.ExpiresAt != nil {
			v.ExpiresAt = key.ExpiresAt.UTC()
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
