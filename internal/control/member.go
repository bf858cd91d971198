package control

import (
	"context"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Members: who holds which roles in a tenant (see README "Members" for how a
// member's roles combine with a token's). Admins and owners change them;
// only an owner grants, takes away or removes the owner role; a tenant
// always keeps one owner.

// AddMember makes subject (a JWT sub) a member with roles.
func (s *Service) AddMember(ctx context.Context, subject string, roles []string) (*ent.Member, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if subject == "" || len(subject) > 200 {
		return nil, errs.Invalid("subject", "must be 1 to 200 characters")
	}
	roles, err = memberRoles(v, roles)
	if err != nil {
		return nil, err
	}
	m, err := c.Member.Create().SetSubject(subject).SetRoles(roles).Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "member "+strconv.Quote(subject))
	}
	return m, audit.Record(ctx, c, "member.add", "Member", m.ID, map[string]any{"subject": subject, "roles": roles})
}

// UpdateMember replaces a member's roles. Demoting the last owner is
// CONFLICT.
func (s *Service) UpdateMember(ctx context.Context, id string, roles []string) (*ent.Member, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	roles, err = memberRoles(v, roles)
	if err != nil {
		return nil, err
	}
	m, err := lockedMember(ctx, c, v, id)
	if err != nil {
		return nil, err
	}
	wasOwner := slices.Contains(m.Roles, viewer.RoleOwner)
	if wasOwner && !isOwner(v) {
		return nil, errs.E(errs.Forbidden, "only an owner can change an owner's roles")
	}
	if wasOwner && !slices.Contains(roles, viewer.RoleOwner) {
		if err := keepAnOwner(ctx, c, m.ID, "demote"); err != nil {
			return nil, err
		}
	}
	before := m.Roles
	m, err = m.Update().SetRoles(roles).Save(ctx)
	if err != nil {
		return nil, err
	}
	return m, audit.Record(ctx, c, "member.update", "Member", m.ID, map[string]any{"subject": m.Subject, "from": before, "roles": roles})
}

// RemoveMember deletes a member. Removing the last owner is CONFLICT.
func (s *Service) RemoveMember(ctx context.Context, id string) (string, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	m, err := lockedMember(ctx, c, v, id)
	if err != nil {
		return "", err
	}
	if slices.Contains(m.Roles, viewer.RoleOwner) {
		if !isOwner(v) {
			return "", errs.E(errs.Forbidden, "only an owner can remove an owner")
		}
		if err := keepAnOwner(ctx, c, m.ID, "remove"); err != nil {
			return "", err
		}
	}
	if err := c.Member.DeleteOneID(m.ID).Exec(ctx); err != nil {
		return "", err
	}
	return m.ID, audit.Record(ctx, c, "member.remove", "Member", m.ID, map[string]any{"subject": m.Subject, "roles": m.Roles})
}

// memberRoles validates roles (paths roles[i]), sorted without duplicates;
// only an owner grants owner.
func memberRoles(v *viewer.Viewer, roles []string) ([]string, error) {
	if len(roles) == 0 {
		return nil, errs.Invalid("roles", "at least one role is required")
	}
	for i, r := range roles {
		if !viewer.KnownRole(r) {
			return nil, errs.Invalid("roles["+strconv.Itoa(i)+"]", "unknown role %q (known: owner, admin, editor, operator, viewer)", r)
		}
		if r == viewer.RoleOwner && !isOwner(v) {
			return nil, errs.E(errs.Forbidden, "only an owner can grant the owner role")
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(roles))), nil
}

func isOwner(v *viewer.Viewer) bool {
	return v.System || slices.Contains(v.Roles, viewer.RoleOwner)
}

// lockedMember serialises membership changes of the tenant (so two
// concurrent demotions cannot both see another owner) and loads member id.
func lockedMember(ctx context.Context, c *ent.Client, v *viewer.Viewer, id string) (*ent.Member, error) {
	if _, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", v.TenantID+"/members"); err != nil {
		return nil, err
	}
	m, err := c.Member.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("member", id)
	}
	return m, err
}

// keepAnOwner refuses a change that leaves the tenant without an owner
// member. A tenant has few members: they are all read.
func keepAnOwner(ctx context.Context, c *ent.Client, changing, verb string) error {
	all, err := c.Member.Query().All(ctx)
	if err != nil {
		return err
	}
	for _, o := range all {
		if o.ID != changing && slices.Contains(o.Roles, viewer.RoleOwner) {
			return nil
		}
	}
	return errs.E(errs.Conflict, "cannot %s the last owner: make another member owner first", verb)
}
