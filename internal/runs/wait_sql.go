package runs

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/store"
)

// The statements of wait steps: their waits (event_waits) and the outside
// events they take (inbound_events). Like sql.go's, they run in the tenant
// transaction of the context under row-level security.

// waitRow is one wait of a wait step's attempt (the event_waits table).
type waitRow struct {
	ID, TenantID, RunID, StepID, StepRunID string
	Attempt                                int
	EnvironmentID, Event, Match            string
	Status                                 string // pending, resolved, expired, cancelled
	ExpiresAt                              time.Time
	Scanned                                bool
	EventID                                *string
	CreatedAt                              time.Time
	Payload                                json.RawMessage
}

// Wait statuses.
const (
	waitPending   = "pending"
	waitResolved  = "resolved"
	waitExpired   = "expired"
	waitCancelled = "cancelled"
)

const waitColumns = `id, tenant_id, run_id, step_id, step_run_id, attempt, environment_id, event, coalesce(match, ''), status,
	expires_at, scanned, event_id, created_at, payload`

func scanWait(row pgx.Row) (*waitRow, error) {
	w := &waitRow{}
	err := row.Scan(&w.ID, &w.TenantID, &w.RunID, &w.StepID, &w.StepRunID, &w.Attempt, &w.EnvironmentID, &w.Event, &w.Match, &w.Status,
		&w.ExpiresAt, &w.Scanned, &w.EventID, &w.CreatedAt, &w.Payload)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return w, err
}

func scanWaits(rows pgx.Rows, err error) ([]*waitRow, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*waitRow
	for rows.Next() {
		w, err := scanWait(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// insertWait holds the insert of a wait.
func insertWait(ctx context.Context, w *waitRow, tokenHash string, resolvedBy *string, now time.Time) error {
	var match *string
	if w.Match != "" {
		match = &w.Match
	}
	var resolvedAt *time.Time
	if w.Status == waitResolved {
		resolvedAt = &now
	}
	return store.Hold(ctx, "event_waits:"+w.ID, 1,
		`INSERT INTO event_waits (id, tenant_id, created_at, updated_at, run_id, step_id, step_run_id, attempt, environment_id, event, match,
		status, expires_at, scanned, token_hash, event_id, resolved_by, payload, resolved_at)
		VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
		w.ID, w.TenantID, now, w.RunID, w.StepID, w.StepRunID, w.Attempt, w.EnvironmentID, w.Event, match,
		w.Status, w.ExpiresAt, w.Scanned, tokenHash, w.EventID, resolvedBy, w.Payload, resolvedAt)
}

// resolveWaitRow holds the resolution of a pending wait: by an event (its
// id), a callback or the timeout, with the payload it produced.
func resolveWaitRow(ctx context.Context, w *waitRow, status, by string, eventID *string, payload json.RawMessage, now time.Time) error {
	err := store.Hold(ctx, "event_waits:"+w.ID, 1,
		`UPDATE event_waits SET status = $2, resolved_by = $3, event_id = $4, payload = $5, resolved_at = $6, scanned = true, updated_at = $6
		WHERE id = $1 AND status = 'pending'`, w.ID, status, by, eventID, payload, now)
	if err == nil {
		w.Status, w.EventID, w.Payload, w.Scanned = status, eventID, payload, true
	}
	return err
}

// markWaitScanned holds that a wait looked at the stored events.
func markWaitScanned(ctx context.Context, w *waitRow, now time.Time) error {
	w.Scanned = true
	return store.Hold(ctx, "event_waits:"+w.ID, 1, `UPDATE event_waits SET scanned = true, updated_at = $2 WHERE id = $1`, w.ID, now)
}

// cancelPendingWaits holds the cancellation of a run's pending waits:
// their callback tokens stop working.
func cancelPendingWaits(ctx context.Context, tenantID, runID string, now time.Time) error {
	return store.Hold(ctx, "event_waits:of:"+runID, -1,
		`UPDATE event_waits SET status = 'cancelled', resolved_at = $3, updated_at = $3 WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending'`,
		tenantID, runID, now)
}

// latestWaitOfStep reads the latest wait of a step run; nil when it has none.
func latestWaitOfStep(ctx context.Context, tenantID, stepRunID string) (*waitRow, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanWait(q.QueryRow(ctx, `SELECT `+waitColumns+` FROM event_waits
		WHERE tenant_id = $1 AND step_run_id = $2 ORDER BY created_at DESC, id DESC LIMIT 1`, tenantID, stepRunID))
}

// waitRowByID reads a wait; nil when there is none.
func waitRowByID(ctx context.Context, tenantID, id string) (*waitRow, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanWait(q.QueryRow(ctx, `SELECT `+waitColumns+` FROM event_waits WHERE id = $1 AND tenant_id = $2`, id, tenantID))
}

// waitByTokenHash reads the wait whose callback token hashes to hash, in
// the transaction's tenant; nil when there is none.
func waitByTokenHash(ctx context.Context, hash string) (*waitRow, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanWait(q.QueryRow(ctx, `SELECT `+waitColumns+` FROM event_waits WHERE token_hash = $1`, hash))
}

// pendingWaitsFor reads up to limit pending waits of an environment for an
// event name, oldest first.
func pendingWaitsFor(ctx context.Context, tenantID, environmentID, name string, limit int) ([]*waitRow, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanWaits(q.Query(ctx, `SELECT `+waitColumns+` FROM event_waits
		WHERE tenant_id = $1 AND environment_id = $2 AND event = $3 AND status = 'pending'
		ORDER BY created_at, id LIMIT $4`, tenantID, environmentID, name, limit))
}

// storedEvent is an outside event as a wait reads it.
type storedEvent struct {
	ID         string
	DedupeID   *string
	Name       string
	Data       json.RawMessage
	ReceivedAt time.Time
}

// untakenEvents reads up to limit events of an environment with a name,
// received since `since`, that no wait of the run took, oldest first.
func untakenEvents(ctx context.Context, tenantID, environmentID, name, runID string, since time.Time, limit int) ([]storedEvent, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT e.id, e.dedupe_id, e.name, e.data, e.received_at FROM inbound_events e
		WHERE e.tenant_id = $1 AND e.environment_id = $2 AND e.name = $3 AND e.received_at >= $4
		AND NOT EXISTS (SELECT 1 FROM event_waits w WHERE w.tenant_id = $1 AND w.run_id = $5 AND w.event_id = e.id)
		ORDER BY e.received_at, e.id LIMIT $6`, tenantID, environmentID, name, since, runID, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (storedEvent, error) {
		var ev storedEvent
		return ev, r.Scan(&ev.ID, &ev.DedupeID, &ev.Name, &ev.Data, &ev.ReceivedAt)
	})
}

// eventByDedupeID reads the latest event of the tenant with dedupe id id
// received after since: its id and environment, or "" when there is none.
func eventByDedupeID(ctx context.Context, tenantID, id string, since time.Time) (eventID, environmentID string, err error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return "", "", err
	}
	err = q.QueryRow(ctx, `SELECT id, environment_id FROM inbound_events WHERE tenant_id = $1 AND dedupe_id = $2 AND received_at > $3
		ORDER BY received_at DESC LIMIT 1`, tenantID, id, since).Scan(&eventID, &environmentID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", nil
	}
	return eventID, environmentID, err
}

// eventNameLockKey names the lock that serialises, for one environment and
// event name, the requests that send such an event with the waits that look
// at the stored ones (see wait.go); it is held until the transaction ends.
func eventNameLockKey(tenantID, environmentID, name string) string {
	return tenantID + "/wait/" + environmentID + "/" + name
}

// lockEventName takes the event name's lock, waiting for it.
func lockEventName(ctx context.Context, tenantID, environmentID, name string) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, eventNameLockKey(tenantID, environmentID, name))
	return err
}

// tryLockEventName takes the event name's lock if it is free.
func tryLockEventName(ctx context.Context, tenantID, environmentID, name string) (bool, error) {
	var ok bool
	_, err := scalar(ctx, &ok, `SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))`, eventNameLockKey(tenantID, environmentID, name))
	return ok, err
}
