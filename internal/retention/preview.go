package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Preview is what a policy would purge now, before it is applied: the same
// selection the purge makes, counted whole (the purge takes it in batches).
type Preview struct {
	PayloadRuns, PayloadBytes, RunsDeleted, AuditEntries, WebhookDeliveries int64
	// At is the instant the preview counted for.
	At time.Time
}

// Preview counts what the tenant's data would lose now if in replaced its
// level's values. The change is made inside a savepoint of the request's
// transaction and rolled back, so the count uses exactly the purge's
// statements and nothing is written.
func (s *Service) Preview(ctx context.Context, in Input) (*Preview, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if err := validate(ctx, c, "policy", in); err != nil {
		return nil, err
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := q.Exec(ctx, "SAVEPOINT retention_preview"); err != nil {
		return nil, err
	}
	out, err := s.preview(ctx, c, q, v.TenantID, in)
	if _, rerr := q.Exec(ctx, "ROLLBACK TO SAVEPOINT retention_preview"); rerr != nil && err == nil {
		err = rerr
	}
	return out, err
}

func (s *Service) preview(ctx context.Context, c *ent.Client, q store.Querier, tenantID string, in Input) (*Preview, error) {
	if err := upsert(ctx, c, viewer.FromContext(ctx).Subject, in); err != nil {
		return nil, err
	}
	r, err := NewResolver(ctx, c, tenantID)
	if err != nil {
		return nil, err
	}
	eff := r.Tenant()
	now := s.o.Now()
	p := &Preview{At: now}
	day := s.o.Day.Seconds()
	set := `IN (SELECT id FROM due)`
	shortest, _ := r.Shortest()
	bound := now.Add(-time.Duration(shortest) * s.o.Day)
	err = q.QueryRow(ctx, `WITH due AS (`+payloadDue+`) SELECT (SELECT count(*) FROM due), (`+payloadBytes(set)+`)`,
		tenantID, now, day, eff.Payload, eff.Run, bound).Scan(&p.PayloadRuns, &p.PayloadBytes)
	if err != nil {
		return nil, fmt.Errorf("preview payloads: %w", err)
	}
	// Tombstones past runDays: those already purged, and those this
	// preview's payload purge would make that are past runDays too.
	err = q.QueryRow(ctx, `SELECT count(*) FROM runs r `+overrides+`
		WHERE r.tenant_id = $1 AND r.finished_at IS NOT NULL AND r.status IN ('succeeded', 'failed', 'cancelled')
		AND r.finished_at <= $2::timestamptz - make_interval(secs => $3::float8 * COALESCE(pw.run_days, pe.run_days, $4::bigint))
		AND NOT `+kept, tenantID, now, day, eff.Run).Scan(&p.RunsDeleted)
	if err != nil {
		return nil, fmt.Errorf("preview runs: %w", err)
	}
	err = q.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND created_at < $2`,
		tenantID, now.Add(-time.Duration(eff.Audit)*s.o.Day)).Scan(&p.AuditEntries)
	if err != nil {
		return nil, fmt.Errorf("preview audit: %w", err)
	}
	err = q.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE tenant_id = $1 AND status <> 'pending' AND updated_at <= $2`,
		tenantID, now.Add(-time.Duration(eff.WebhookDelivery)*s.o.Day)).Scan(&p.WebhookDeliveries)
	if err != nil {
		return nil, fmt.Errorf("preview webhook deliveries: %w", err)
	}
	return p, nil
}

// Pass is one retention pass in the tenant, as retentionRuns lists it.
type Pass = ent.RetentionPass

// Passes lists the tenant's latest passes, newest first (admins).
func (s *Service) Passes(ctx context.Context, first int) ([]*ent.RetentionPass, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if first < 1 || first > 100 {
		return nil, errs.Invalid("first", "must be between 1 and 100")
	}
	return c.RetentionPass.Query().Order(ent.Desc("started_at"), ent.Desc("id")).Limit(first).All(ctx)
}
