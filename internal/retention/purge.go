package retention

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The purge is responsible for enforcing every tenant's policies. Each pass
// visits the tenants in turn and, for each, purges in bounded batches, one
// transaction per batch (never one long transaction): the payloads of
// finished runs past their payloadDays (the run row stays as a tombstone),
// tombstones past runDays (deleted with their steps and events), audit
// entries past auditDays and finished webhook deliveries past
// webhookDeliveryDays. A batch locks its runs with SKIP LOCKED, so a run
// the state machine holds is left for the next pass and run traffic never
// waits for the purge. Each batch adds its counts to the tenant's pass
// record in its own transaction, so a worker killed mid-pass leaves an
// exact record of what it did, and the next pass (in any worker) goes on
// where it stopped: nothing is purged twice, nothing is skipped. Redis
// plays no part.

// PurgeName is the purge's singleton (advisory lock) name.
const PurgeName = "retention.purge"

// Subject is who purged (Run.purgedBy, audit actor).
const Subject = "system:retention"

// Kinds counted by sluice_retention_purged_total{kind}.
const (
	KindPayloads          = "payloads"
	KindRuns              = "runs"
	KindAudit             = "audit"
	KindWebhookDeliveries = "webhook_deliveries"
	KindBytes             = "payload_bytes"
)

// Options configure a Service.
type Options struct {
	Client *ent.Client
	Log    *slog.Logger
	// Day is the length of a policy's day (SLUICE_RETENTION_DAY). If zero,
	// 24h. Shorter days are for tests; production refuses under 1h.
	Day time.Duration
	// Interval is the pause between passes (SLUICE_RETENTION_INTERVAL). If
	// zero, 1h.
	Interval time.Duration
	// Batch is how many runs (or entries) one transaction purges. If zero,
	// 500.
	Batch int
	// Now is the clock. If nil, the UTC wall clock at microseconds.
	Now func() time.Time
	// Purged counts what passes purged, by kind; nil counts nothing.
	Purged *prometheus.CounterVec
}

// Service is the retention room's door.
type Service struct{ o Options }

// New returns a Service.
func New(o Options) *Service {
	if o.Day <= 0 {
		o.Day = 24 * time.Hour
	}
	if o.Interval <= 0 {
		o.Interval = time.Hour
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	return &Service{o: o}
}

// NewPurgedCounter registers sluice_retention_purged_total{kind} on reg.
func NewPurgedCounter(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_retention_purged_total",
		Help: "What the retention purge purged, by kind: payloads (runs whose payloads went), runs (tombstones deleted), audit, webhook_deliveries, payload_bytes.",
	}, []string{"kind"})
	reg.MustRegister(c)
	return c
}

// Day is the length of a policy's day.
func (s *Service) Day() time.Duration { return s.o.Day }

// Counts is what a pass (or a preview) counts in one tenant.
type Counts struct {
	PayloadRuns, PayloadBytes, RunsDeleted, AuditDeleted, WebhookDeliveriesDeleted int64
	Batches                                                                        int
}

func (c Counts) any() bool {
	return c.PayloadRuns+c.RunsDeleted+c.AuditDeleted+c.WebhookDeliveriesDeleted > 0
}

// RunPurger purges every Interval until ctx ends, one worker at a time.
func (s *Service) RunPurger(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, PurgeName, s.o.Log, func() time.Duration { return s.o.Interval }, func(ctx context.Context) error {
		_, err := s.Pass(ctx)
		return err
	})
}

// Pass makes one pass over every tenant and returns the totals. Tests call
// it directly.
func (s *Service) Pass(ctx context.Context) (Counts, error) {
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return Counts{}, err
	}
	var total Counts
	err = store.EachTenant(ctx, tenants, func(tid string) error {
		c, err := s.PurgeTenant(ctx, tid)
		total.PayloadRuns += c.PayloadRuns
		total.PayloadBytes += c.PayloadBytes
		total.RunsDeleted += c.RunsDeleted
		total.AuditDeleted += c.AuditDeleted
		total.WebhookDeliveriesDeleted += c.WebhookDeliveriesDeleted
		total.Batches += c.Batches
		return err
	})
	return total, err
}

// pass is one tenant's pass: its record is created with the first batch
// that purges anything.
type pass struct {
	s      *Service
	tenant string
	now    time.Time
	id     string
	c      Counts
	// The batch in flight: its counts and record, until it commits.
	pending   Counts
	pendingID string
}

// PurgeTenant purges one tenant's data past its policies.
func (s *Service) PurgeTenant(ctx context.Context, tenantID string) (Counts, error) {
	p := &pass{s: s, tenant: tenantID, now: s.o.Now()}
	ctx = viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: Subject, System: true})
	var eff Effective
	var payloadBound, runBound time.Time
	if err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		r, err := NewResolver(ctx, ent.FromContext(ctx), tenantID)
		if err != nil {
			return err
		}
		eff = r.Tenant()
		payloadDays, runDays := r.Shortest()
		payloadBound, runBound = p.before(payloadDays), p.before(runDays)
		return nil
	}); err != nil {
		return p.c, err
	}
	err := p.loop(ctx, func(ctx context.Context, q store.Querier) (bool, error) { return p.payloads(ctx, q, eff, payloadBound) })
	if err == nil {
		err = p.loop(ctx, func(ctx context.Context, q store.Querier) (bool, error) { return p.tombstones(ctx, q, eff, runBound) })
	}
	if err == nil {
		err = p.loop(ctx, func(ctx context.Context, q store.Querier) (bool, error) { return p.audit(ctx, q, eff) })
	}
	if err == nil {
		err = p.loop(ctx, func(ctx context.Context, q store.Querier) (bool, error) { return p.deliveries(ctx, q, eff) })
	}
	if err == nil {
		err = p.loop(ctx, p.oauthStates)
	}
	if p.id != "" || err != nil {
		if ferr := p.finish(ctx, err); ferr != nil && err == nil {
			err = ferr
		}
	}
	return p.c, err
}

// before is the time days (of the service's length) before the pass's now.
func (p *pass) before(days int) time.Time {
	return p.now.Add(-time.Duration(days) * p.s.o.Day)
}

// loop runs batch in its own transaction until it says there is no more.
// What a batch recorded counts once its transaction has committed.
func (p *pass) loop(ctx context.Context, batch func(ctx context.Context, q store.Querier) (more bool, err error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		more := false
		p.pending, p.pendingID = Counts{}, ""
		err := store.InTenant(ctx, p.s.o.Client, func(ctx context.Context) error {
			q, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			more, err = batch(ctx, q)
			return err
		})
		if err != nil {
			return err
		}
		p.commit()
		if !more {
			return nil
		}
	}
}

// record adds a batch's counts to the pass record in the batch's
// transaction (creating the record with the first one).
func (p *pass) record(ctx context.Context, q store.Querier, d Counts) error {
	id := p.id
	if id == "" {
		r, err := ent.FromContext(ctx).RetentionPass.Create().SetStartedAt(p.now).Save(ctx)
		if err != nil {
			return fmt.Errorf("create retention pass: %w", err)
		}
		id = r.ID
	}
	_, err := q.Exec(ctx, `UPDATE retention_passes SET payload_runs = payload_runs + $2, payload_bytes = payload_bytes + $3,
		runs_deleted = runs_deleted + $4, audit_deleted = audit_deleted + $5, webhook_deliveries_deleted = webhook_deliveries_deleted + $6,
		batches = batches + 1 WHERE id = $1`, id, d.PayloadRuns, d.PayloadBytes, d.RunsDeleted, d.AuditDeleted, d.WebhookDeliveriesDeleted)
	if err != nil {
		return fmt.Errorf("record retention batch: %w", err)
	}
	d.Batches = 1
	p.pending, p.pendingID = d, id
	return nil
}

// commit counts the batch that just committed.
func (p *pass) commit() {
	d := p.pending
	if p.pendingID == "" {
		return
	}
	p.id = p.pendingID
	p.c.PayloadRuns += d.PayloadRuns
	p.c.PayloadBytes += d.PayloadBytes
	p.c.RunsDeleted += d.RunsDeleted
	p.c.AuditDeleted += d.AuditDeleted
	p.c.WebhookDeliveriesDeleted += d.WebhookDeliveriesDeleted
	p.c.Batches += d.Batches
	if m := p.s.o.Purged; m != nil {
		m.WithLabelValues(KindPayloads).Add(float64(d.PayloadRuns))
		m.WithLabelValues(KindBytes).Add(float64(d.PayloadBytes))
		m.WithLabelValues(KindRuns).Add(float64(d.RunsDeleted))
		m.WithLabelValues(KindAudit).Add(float64(d.AuditDeleted))
		m.WithLabelValues(KindWebhookDeliveries).Add(float64(d.WebhookDeliveriesDeleted))
	}
}

// finish closes the pass record and writes its audit entry.
func (p *pass) finish(ctx context.Context, passErr error) error {
	return store.InTenant(context.WithoutCancel(ctx), p.s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		if p.id == "" && errors.Is(passErr, context.Canceled) {
			return nil // stopped (shutdown) before purging anything here
		}
		if p.id == "" {
			// A pass that failed before purging anything records the error.
			r, err := c.RetentionPass.Create().SetStartedAt(p.now).Save(ctx)
			if err != nil {
				return err
			}
			p.id = r.ID
		}
		u := c.RetentionPass.UpdateOneID(p.id).SetFinishedAt(p.s.o.Now())
		if passErr != nil {
			u.SetError(truncate(passErr.Error(), 2000))
		}
		if err := u.Exec(ctx); err != nil {
			return fmt.Errorf("finish retention pass: %w", err)
		}
		if !p.c.any() {
			return nil
		}
		return audit.Record(ctx, c, "retention.purge", "RetentionPass", p.id, map[string]any{
			"payloadRuns": p.c.PayloadRuns, "payloadBytes": p.c.PayloadBytes, "runsDeleted": p.c.RunsDeleted,
			"auditDeleted": p.c.AuditDeleted, "webhookDeliveriesDeleted": p.c.WebhookDeliveriesDeleted, "batches": p.c.Batches,
		})
	})
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// kept is the condition under which a finished run (alias r) keeps
// everything whatever its policy: a legal hold, an open incident naming
// it, an evaluation's dataset holding it, or a run that still reads it (an
// unfinished parent, an unfinished sandbox replay of it).
const kept = `(r.hold_reason IS NOT NULL
	OR EXISTS (SELECT 1 FROM evaluation_examples x WHERE x.tenant_id = r.tenant_id AND x.source_run_id = r.id)
	OR EXISTS (SELECT 1 FROM incidents i WHERE i.tenant_id = r.tenant_id AND i.status <> 'RESOLVED' AND i.sample_run_ids ? r.id)
	OR EXISTS (SELECT 1 FROM sla_breaches b JOIN incidents i ON i.id = b.incident_id AND i.tenant_id = b.tenant_id
		WHERE b.tenant_id = r.tenant_id AND b.run_id = r.id AND i.status <> 'RESOLVED')
	OR EXISTS (SELECT 1 FROM runs pr WHERE pr.tenant_id = r.tenant_id AND pr.id = r.parent_run_id AND pr.finished_at IS NULL)
	OR EXISTS (SELECT 1 FROM runs sr WHERE sr.tenant_id = r.tenant_id AND sr.replay_of = r.id AND sr.mode = 'sandbox' AND sr.finished_at IS NULL))`

// overrides joins a run (alias r) with its environment's and workflow's
// policies (pe, pw).
const overrides = `LEFT JOIN retention_policies pw ON pw.tenant_id = r.tenant_id AND pw.scope = 'WORKFLOW' AND pw.target_id = r.workflow_id
	LEFT JOIN retention_policies pe ON pe.tenant_id = r.tenant_id AND pe.scope = 'ENVIRONMENT' AND pe.target_id = r.environment_id`

// payloadDue selects the finished, unpurged runs past their payload
// cutoff. $1 tenant, $2 now, $3 day in seconds, $4 and $5 the tenant's
// payloadDays and runDays, $6 the payload bound (Resolver.Shortest).
//
// A run's cutoff depends on its workflow's and environment's policies, so
// it cannot bound the index scan by itself: without more, a pass read every
// finished, unpurged run the tenant keeps (90 days of runs by default) to
// find the few past their cutoff. The shortest period any of the tenant's
// policies gives is a bound every due run is under; as an index condition on
// run_retention_payload (tenant_id, finished_at) it stops the scan at the
// runs too young for any policy. It selects nothing the per-run cutoff would
// not. It is a parameter, computed from the policies the pass resolved, so
// that the planner sees its value (as an expression over a sub-select it was costed blind, and a
// bitmap scan of the whole tenant's runs was sometimes chosen instead).
var payloadDue = `SELECT r.id FROM runs r ` + overrides + `
	WHERE r.tenant_id = $1 AND r.finished_at IS NOT NULL AND r.payload_purged_at IS NULL
	AND r.status IN ('succeeded', 'failed', 'cancelled')
	AND r.finished_at <= $6::timestamptz
	AND r.finished_at <= $2::timestamptz - make_interval(secs => $3::float8 *
		LEAST(COALESCE(pw.payload_days, pe.payload_days, $4::bigint), COALESCE(pw.run_days, pe.run_days, $5::bigint)))
	AND NOT ` + kept

// payloadBatch locks the next batch ($7 runs) of payloadDue, oldest first.
var payloadBatch = payloadDue + ` ORDER BY r.finished_at, r.id LIMIT $7 FOR UPDATE OF r SKIP LOCKED`

// payloadBytes sums, for the runs of the set expression (which uses $1 as
// the tenant), the stored size of what a payload purge clears.
func payloadBytes(set string) string {
	return `SELECT
	COALESCE((SELECT sum(COALESCE(pg_column_size(input), 0) + COALESCE(pg_column_size(output), 0)) FROM runs WHERE tenant_id = $1 AND id ` + set + `), 0)
	+ COALESCE((SELECT sum(pg_column_size(output)) FROM step_runs WHERE tenant_id = $1 AND run_id ` + set + `), 0)
	+ COALESCE((SELECT sum(pg_column_size(calls)) FROM step_attempts WHERE tenant_id = $1 AND run_id ` + set + `), 0)
	+ COALESCE((SELECT sum(pg_column_size(data)) FROM run_events WHERE tenant_id = $1 AND run_id ` + set + `), 0)
	+ COALESCE((SELECT sum(COALESCE(pg_column_size(item), 0) + COALESCE(pg_column_size(output), 0) + COALESCE(pg_column_size(calls), 0))
		FROM map_items WHERE tenant_id = $1 AND run_id ` + set + `), 0)
	+ COALESCE((SELECT sum(pg_column_size(payload)) FROM event_waits WHERE tenant_id = $1 AND run_id ` + set + `), 0)
	+ COALESCE((SELECT sum(pg_column_size(context)) FROM approval_requests WHERE tenant_id = $1 AND run_id ` + set + `), 0)`
}

// emptyInput is what a purged run's input becomes (the column is required).
const emptyInput = `'{}'::jsonb`

// payloads purges one batch of runs' payloads; no run finished after bound
// is due.
func (p *pass) payloads(ctx context.Context, q store.Querier, eff Effective, bound time.Time) (bool, error) {
	rows, err := q.Query(ctx, payloadBatch,
		p.tenant, p.now, p.s.o.Day.Seconds(), eff.Payload, eff.Run, bound, p.s.o.Batch)
	if err != nil {
		return false, fmt.Errorf("select runs to purge: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return false, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if len(ids) == 0 {
		return false, nil
	}
	var bytes int64
	if err := q.QueryRow(ctx, payloadBytes("= ANY($2)"), p.tenant, ids).Scan(&bytes); err != nil {
		return false, fmt.Errorf("size payloads: %w", err)
	}
	stmts := []string{
		`UPDATE runs SET input = ` + emptyInput + `, output = NULL, payload_purged_at = $3, payload_purged_by = $4 WHERE tenant_id = $1 AND id = ANY($2)`,
		`UPDATE step_runs SET output = NULL WHERE tenant_id = $1 AND run_id = ANY($2) AND output IS NOT NULL`,
		`UPDATE step_attempts SET calls = NULL WHERE tenant_id = $1 AND run_id = ANY($2) AND calls IS NOT NULL`,
		`UPDATE map_items SET item = NULL, output = NULL, calls = NULL WHERE tenant_id = $1 AND run_id = ANY($2)`,
		`UPDATE event_waits SET payload = NULL WHERE tenant_id = $1 AND run_id = ANY($2) AND payload IS NOT NULL`,
		`UPDATE approval_requests SET context = NULL WHERE tenant_id = $1 AND run_id = ANY($2) AND context IS NOT NULL`,
		// run_events is append-only for the app role: a SECURITY DEFINER
		// function of the migrations clears the data of the tenant's events.
		`SELECT sluice_retention_purge_event_data($1, $2)`,
	}
	for _, st := range stmts {
		args := []any{p.tenant, ids}
		if st[:11] == "UPDATE runs" {
			args = append(args, p.now, Subject)
		}
		if _, err := q.Exec(ctx, st, args...); err != nil {
			return false, fmt.Errorf("purge payloads: %w", err)
		}
	}
	if err := p.record(ctx, q, Counts{PayloadRuns: int64(len(ids)), PayloadBytes: bytes}); err != nil {
		return false, err
	}
	return len(ids) == p.s.o.Batch, nil
}

// tombstoneBatch deletes the next batch ($5) of tombstones past their
// runDays: $1 tenant, $2 now, $3 day in seconds, $4 the tenant's runDays,
// $6 the tombstones' bound (Resolver.Shortest). As payloadDue's, the scan of
// run_retention_tombstone stops at the shortest runDays of the tenant's
// policies, not at the end of every tombstone the tenant keeps.
var tombstoneBatch = `DELETE FROM runs WHERE tenant_id = $1 AND id IN (
		SELECT r.id FROM runs r ` + overrides + `
		WHERE r.tenant_id = $1 AND r.payload_purged_at IS NOT NULL AND r.finished_at IS NOT NULL
		AND r.finished_at <= $6::timestamptz
		AND r.finished_at <= $2::timestamptz - make_interval(secs => $3::float8 * COALESCE(pw.run_days, pe.run_days, $4::bigint))
		AND NOT ` + kept + `
		ORDER BY r.finished_at, r.id LIMIT $5 FOR UPDATE OF r SKIP LOCKED)`

// tombstones deletes one batch of purged runs past runDays, with their
// steps, attempts, events and waits (foreign keys cascade). Every run
// reaches its runDays purged (payloadDays is never longer), so only
// tombstones are looked at.
func (p *pass) tombstones(ctx context.Context, q store.Querier, eff Effective, bound time.Time) (bool, error) {
	tag, err := q.Exec(ctx, tombstoneBatch, p.tenant, p.now, p.s.o.Day.Seconds(), eff.Run, p.s.o.Batch, bound)
	if err != nil {
		return false, fmt.Errorf("delete runs: %w", err)
	}
	n := tag.RowsAffected()
	if n == 0 {
		return false, nil
	}
	return n == int64(p.s.o.Batch), p.record(ctx, q, Counts{RunsDeleted: n})
}

// audit deletes one batch of audit entries past auditDays (through a
// SECURITY DEFINER function: the app role may not delete them).
func (p *pass) audit(ctx context.Context, q store.Querier, eff Effective) (bool, error) {
	before := p.now.Add(-time.Duration(eff.Audit) * p.s.o.Day)
	var n int64
	if err := q.QueryRow(ctx, `SELECT sluice_retention_purge_audit($1, $2, $3)`, p.tenant, before, p.s.o.Batch).Scan(&n); err != nil {
		return false, fmt.Errorf("delete audit entries: %w", err)
	}
	if n == 0 {
		return false, nil
	}
	return n == int64(p.s.o.Batch), p.record(ctx, q, Counts{AuditDeleted: n})
}

// deliveries deletes one batch of finished webhook deliveries (and their
// attempts) past webhookDeliveryDays; pending ones stay.
func (p *pass) deliveries(ctx context.Context, q store.Querier, eff Effective) (bool, error) {
	before := p.now.Add(-time.Duration(eff.WebhookDelivery) * p.s.o.Day)
	tag, err := q.Exec(ctx, `DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND id IN (
		SELECT id FROM webhook_deliveries WHERE tenant_id = $1 AND status <> 'pending' AND updated_at <= $2
		ORDER BY updated_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)`, p.tenant, before, p.s.o.Batch)
	if err != nil {
		return false, fmt.Errorf("delete webhook deliveries: %w", err)
	}
	n := tag.RowsAffected()
	if n == 0 {
		return false, nil
	}
	return n == int64(p.s.o.Batch), p.record(ctx, q, Counts{WebhookDeliveriesDeleted: n})
}

// oauthStates deletes one batch of OAuth authorization states (connections'
// authorize flow) that expired more than a policy day ago, used or not: an
// expired state can never be redeemed, and its credential's audit entries
// keep the record of the authorization. They are not counted in the pass.
func (p *pass) oauthStates(ctx context.Context, q store.Querier) (bool, error) {
	before := p.now.Add(-p.s.o.Day)
	tag, err := q.Exec(ctx, `DELETE FROM oauth_states WHERE tenant_id = $1 AND id IN (
		SELECT id FROM oauth_states WHERE tenant_id = $1 AND expires_at <= $2
		ORDER BY expires_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)`, p.tenant, before, p.s.o.Batch)
	if err != nil {
		return false, fmt.Errorf("delete expired oauth states: %w", err)
	}
	return tag.RowsAffected() == int64(p.s.o.Batch), nil
}
