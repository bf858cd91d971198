package control

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// CreateAPIKey issues an API key. Admins only, and a caller cannot grant a
// role it does not hold (only owners grant owner).
func (s *Service) CreateAPIKey(ctx context.Context, name string, roles []string, environmentID *string, expiresAt *time.Time) (*ent.APIKey, string, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, "", err
	}
	if name == "" || len(name) > 200 {
		return nil, "", errs.Invalid("input.name", "must be 1 to 200 characters")
	}
	if len(roles) == 0 {
		return nil, "", errs.Invalid("input.roles", "at least one role is required")
	}
	for i, r := range roles {
		if !viewer.KnownRole(r) {
			return nil, "", errs.Invalid("input.roles["+strconv.Itoa(i)+"]", "unknown role %q", r)
		}
		if r == viewer.RoleOwner && !v.System && !slices.Contains(v.Roles, viewer.RoleOwner) {
			return nil, "", errs.E(errs.Forbidden, "only an owner can grant the owner role")
		}
	}
	if expiresAt != nil && !expiresAt.After(s.now()) {
		return nil, "", errs.Invalid("input.expiresAt", "must be in the future")
	}
	q := c.APIKey.Create()
	if environmentID != nil {
		env, err := EnvironmentByID(ctx, c, *environmentID, "input.environmentID")
		if err != nil {
			return nil, "", err
		}
		q.SetEnvironmentID(env.ID)
	}
	token, hash := auth.NewAPIKeyToken(v.TenantID)
	key, err := q.SetName(name).
		SetRoles(slices.Compact(slices.Sorted(slices.Values(roles)))).
		SetTokenPrefix(token[:len(auth.APIKeyPrefix)+10]).
		SetTokenHash(hash).
		SetCreatedBy(v.Subject).
		SetNillableExpiresAt(expiresAt).
		Save(ctx)
	if err != nil {
		return nil, "", store.ConflictIfExists(err, "API key")
	}
	return key, token, audit.Record(ctx, c, "api_key.create", "APIKey", key.ID, map[string]any{"name": name, "roles": key.Roles})
}

// RevokeAPIKey stops a key at once. Revoking a revoked key returns it.
func (s *Service) RevokeAPIKey(ctx context.Context, id string) (*ent.APIKey, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	key, err := c.APIKey.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("API key", id)
	}
	if err != nil {
		return nil, err
	}
	if key.RevokedAt != nil {
		return key, nil
	}
	key, err = key.Update().SetRevokedAt(s.now()).Save(ctx)
	if err != nil {
		return nil, err
	}
	s.publishKeyRevokedAfterCommit(ctx, key.TenantID, key.ID)
	return key, audit.Record(ctx, c, "api_key.revoke", "APIKey", key.ID, map[string]any{"name": key.Name})
}

// KeyRevocationPublisher tells every API process that an API key was
// revoked, so the streams it opened end there too. The run publisher
// implements it when live streams are served.
type KeyRevocationPublisher interface {
	PublishKeyRevoked(ctx context.Context, tenantID, keyID string)
}

// publishKeyRevokedAfterCommit announces a revocation once it is durable.
func (s *Service) publishKeyRevokedAfterCommit(ctx context.Context, tenantID, keyID string) {
	p, ok := s.revocations.(KeyRevocationPublisher)
	if !ok {
		return
	}
	store.AfterCommit(ctx, func() { p.PublishKeyRevoked(context.WithoutCancel(ctx), tenantID, keyID) })
}
