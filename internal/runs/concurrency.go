package runs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Concurrency keys. A definition's `concurrency: {limit, key, onLimit}`
// lets at most limit unfinished runs of the workflow in an environment share
// a key (the key expression over the input; without one, the workflow in
// the environment is one key). A run stores its key (runs.concurrency_key)
// and createRun decides under the key's lock (sluice_key_active, migration
// 20261128095800_concurrency_keys_rls), counting the key's running runs,
// that is its unfinished runs that are not waiting for the key:
//   - queue: the run is created queued with its first steps held
//     (held_steps reason key_concurrency, ready_at NULL, no task);
//     Run.queueReason is KEY_CONCURRENCY;
//   - cancel_in_progress: the key's oldest running runs are cancelled (the
//     cancelRun code, audited as run.cancel) and the new run starts;
//   - skip_new: the run is created cancelled, error class
//     concurrency_skipped.
//
// When a run with a key finishes, the transaction that finishes it releases
// the key's oldest waiting runs that fit (sluice_release_key: held rows
// deleted, ready_at set, their step tasks sent with the transaction's). It
// does not wait for the key's lock: when another transaction has it, or the
// finishing transaction is lost, the sweep (ReleaseKeys, run by
// internal/dispatch for every tenant with held steps) releases them.
// Fair dispatch's release (sluice_release_held) never releases these rows.

// Error class of a run skipped by its key's limit (onLimit skip_new).
const ClassConcurrencySkipped = "concurrency_skipped"

// keyDecision is what createRun does about a run's concurrency key.
type keyDecision int

const (
	keyStart   keyDecision = iota // under the limit, or no limit
	keyHold                       // queue: hold its first steps
	keySkip                       // skip_new: created cancelled
	tenantHold                    // the tenant's cap on runs: hold its first steps (runcap.go)
)

// decideKey evaluates the run's concurrency key (setting r.ConcurrencyKey)
// and, under the key's lock, applies its limit. lim is the run's
// concurrency setting: the environment's override, else the definition's
// (envconcurrency.go). Sandbox replays call
// nothing and are not limited.
func (e *Service) decideKey(ctx context.Context, c *ent.Client, r *ent.Run, lim *definition.Concurrency, def *definition.Definition, path string) (keyDecision, error) {
	if lim == nil || r.Mode != run.ModeLive {
		return keyStart, nil
	}
	key, err := lim.KeyOf(def.InputValue(r.Input))
	if err != nil {
		return 0, errs.Invalid(path, "the workflow's concurrency key cannot be evaluated for this input: %v", err)
	}
	r.ConcurrencyKey = &key
	q, err := store.Raw(ctx)
	if err != nil {
		return 0, err
	}
	var active int
	if err := q.QueryRow(ctx, `SELECT sluice_key_active($1, $2, $3, $4, $5)`, r.TenantID, r.WorkflowID, r.EnvironmentID, key, lim.Limit).Scan(&active); err != nil {
		return 0, fmt.Errorf("concurrency key: %w", err)
	}
	if active < lim.Limit {
		return keyStart, nil
	}
	switch lim.Mode() {
	case definition.OnLimitSkipNew:
		return keySkip, nil
	case definition.OnLimitCancelInProgress:
		return keyStart, e.cancelInProgress(ctx, c, r, key, active-lim.Limit+1)
	}
	return keyHold, nil
}

// cancelInProgress cancels the n oldest running runs with the key, for the
// new run r.
func (e *Service) cancelInProgress(ctx context.Context, c *ent.Client, r *ent.Run, key string, n int) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	rows, err := q.Query(ctx, `SELECT r.id FROM runs r WHERE r.tenant_id = $1 AND r.workflow_id = $2 AND r.environment_id = $3
		AND r.concurrency_key = $4 AND r.status IN ('queued', 'running', 'waiting')
		AND NOT EXISTS (SELECT 1 FROM held_steps h WHERE h.tenant_id = $1 AND h.run_id = r.id AND h.reason = 'key_concurrency')
		ORDER BY r.created_at, r.id LIMIT $5`, r.TenantID, r.WorkflowID, r.EnvironmentID, key, n)
	if err != nil {
		return fmt.Errorf("concurrency key: runs in progress: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("concurrency key: runs in progress: %w", err)
	}
	for _, id := range list {
		s, err := e.lockRun(ctx, c, id)
		if err != nil {
			return fmt.Errorf("lock run %s: %w", id, err)
		}
		if s.terminal() {
			continue
		}
		// The new run takes its place: no waiting run is released for it.
		s.noKeyRelease = true
		msg := fmt.Sprintf("cancelled by run %s: the workflow's concurrency limit for its key is reached (onLimit cancel_in_progress)", r.ID)
		if err := s.cancel(ctx, msg, map[string]any{"by": r.ID, "reason": "concurrency"}); err != nil {
			return err
		}
		if err := audit.Record(ctx, c, "run.cancel", "Run", id, map[string]any{"by": r.ID, "reason": "concurrency_cancel_in_progress"}); err != nil {
			return err
		}
	}
	return nil
}

// Reasons of held_steps rows that hold a whole run for a run-level limit
// (fair dispatch's sluice_release_held leaves them alone).
const (
	heldForKey        = "key_concurrency"
	heldForTenantRuns = "tenant_runs"
)

// holdFirstSteps holds a new run's first steps for a run-level limit
// (reason heldForKey or heldForTenantRuns): one held_steps row each,
// written with the run's inserts.
func holdFirstSteps(ctx context.Context, r *ent.Run, list []*ent.StepRun, reason string) error {
	var ids, stepIDs []string
	for _, sr := range list {
		if sr.CurrentAttemptID != nil && sr.ReadyAt == nil {
			ids, stepIDs = append(ids, sr.ID), append(stepIDs, sr.StepID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	return store.Hold(ctx, "held_steps:"+reason+":"+r.ID, len(ids),
		`INSERT INTO held_steps (id, tenant_id, run_id, step_id, workflow_id, priority, reason, since)
		SELECT t.id, $1, $2, t.step_id, $3, $4, $5, $6 FROM unnest($7::text[], $8::text[]) AS t(id, step_id)`,
		r.TenantID, r.ID, r.WorkflowID, r.Priority, reason, r.CreatedAt, ids, stepIDs)
}

// skipForKey finishes a new run skipped by its key's limit: its steps are
// created cancelled, and so is the run.
func (s *runState) skipForKey(lim *definition.Concurrency) {
	msg := fmt.Sprintf("skipped: the workflow's concurrency limit (%d) for key %q is reached in this environment (onLimit skip_new)",
		lim.Limit, *s.run.ConcurrencyKey)
	class := ClassConcurrencySkipped
	s.update.SetErrorClass(class).SetErrorMessage(msg)
	s.run.ErrorClass, s.run.ErrorMessage = &class, &msg
	s.noKeyRelease = true
	s.setStatus(run.StatusCancelled, map[string]any{"class": class, "message": msg})
}

// releaseKey releases, in the transaction of a run that finished, the
// oldest runs waiting for its key that fit under the limit, and adds their
// step tasks to the flush.
func (s *runState) releaseKey(ctx context.Context) error {
	if s.noKeyRelease || s.run.ConcurrencyKey == nil {
		return nil
	}
	// The limit in force: the environment's override (read by
	// sluice_release_key), else the definition's.
	ts, err := s.e.releaseKey(ctx, s.run.TenantID, s.run.WorkflowID, s.run.EnvironmentID, *s.run.ConcurrencyKey, definitionLimit(s.def), false)
	if err != nil {
		return err
	}
	s.tasks = append(s.tasks, ts...)
	return nil
}

// releaseKey runs sluice_release_key in the transaction in ctx and returns
// the released steps' tasks (to send after commit).
func (e *Service) releaseKey(ctx context.Context, tenantID, workflowID, envID, key string, limit int, wait bool) ([]tasks.Task, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	ts, err := releasedTasks(ctx, q, e.now(), tenantID,
		`SELECT run_id, step_id, step_type, attempt_id, version_id FROM sluice_release_key($1, $2, $3, $4, $5, $6, $7)`,
		tenantID, workflowID, envID, key, limit, e.now(), wait)
	if err != nil {
		return nil, fmt.Errorf("release concurrency key: %w", err)
	}
	if e.metrics != nil && len(ts) > 0 {
		e.metrics.releasedSteps(len(ts))
	}
	return ts, nil
}

// maxKeysPerSweep bounds the keys one sweep of a tenant visits.
const maxKeysPerSweep = 1000

// ReleaseKeys is the sweep of a tenant's concurrency keys: for every key
// with runs waiting for it, in a transaction of its own, it releases the
// oldest that fit under the limit (the limit of the oldest waiting run's
// version), waiting for the key's lock, and sends them once it commits. It
// recovers keys whose finishing transaction released nothing (it found the
// key locked, or it was lost). It returns how many steps it released.
func (e *Service) ReleaseKeys(ctx context.Context, tenantID string) (int, error) {
	type keyRef struct{ workflowID, envID, key, versionID string }
	var keys []keyRef
	sys := viewer.SystemContext(ctx, tenantID)
	err := store.InTenant(sys, e.client, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT DISTINCT ON (r.workflow_id, r.environment_id, r.concurrency_key)
				r.workflow_id, r.environment_id, r.concurrency_key, r.version_id
			FROM held_steps h JOIN runs r ON r.tenant_id = h.tenant_id AND r.id = h.run_id
			WHERE h.tenant_id = $1 AND h.reason = 'key_concurrency' AND r.concurrency_key IS NOT NULL
			ORDER BY r.workflow_id, r.environment_id, r.concurrency_key, r.created_at LIMIT $2`, tenantID, maxKeysPerSweep)
		if err != nil {
			return fmt.Errorf("waiting concurrency keys: %w", err)
		}
		keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (keyRef, error) {
			var k keyRef
			return k, r.Scan(&k.workflowID, &k.envID, &k.key, &k.versionID)
		})
		return err
	})
	if err != nil {
		return 0, err
	}
	total := 0
	var errList []error
	for _, k := range keys {
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		err := store.InTenant(sys, e.client, func(ctx context.Context) error {
			c := ent.FromContext(ctx)
			def, err := e.definitionOf(ctx, c, k.versionID)
			if err != nil {
				return err
			}
			ts, err := e.releaseKey(ctx, tenantID, k.workflowID, k.envID, k.key, definitionLimit(def), true)
			if err != nil {
				return err
			}
			total += len(ts)
			e.dispatchAfterCommit(ctx, ts)
			return nil
		})
		if err != nil {
			errList = append(errList, fmt.Errorf("key %q of workflow %s in %s: %w", k.key, k.workflowID, k.envID, err))
		}
	}
	return total, errors.Join(errList...)
}
