package runs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/drift"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/respcache"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Response checks of http steps, around the call: the response cache
// (internal/respcache) and schema drift (internal/drift). The claim notes
// what the attempt needs (prepareResponseChecks), the executor serves the
// call through the cache (responseCache), the response's shape is compared
// with the shapes learned for the step and version (checkDrift), and the
// finish records what was learned, in the finish's transaction, with the
// step.response_changed event when the shape is new (recordDrift).

// responseChecks is the Service's share of state for them.
type responseChecks struct {
	once  sync.Once
	cache *respcache.Cache
	// known: "version|step|hash" of shapes learned in Postgres; learned
	// shapes never change, so a known one needs no read.
	known sync.Map
	count int64
	mu    sync.Mutex
}

// maxKnownShapes bounds the memory of known shapes; past it, it starts over.
const maxKnownShapes = 10000

// maxLearnedShapes bounds the shapes learned per step and version: a
// response whose keys are data (ids as object keys) would make a new shape
// every time. Past it, responses are still checked against what was
// learned, but no shape is learned and no step.response_changed is emitted.
const maxLearnedShapes = 50

// maxRecordedChanges bounds the changes one new shape records and its
// event carries.
const maxRecordedChanges = 100

// respCheck is what an http attempt needs for them, noted at its claim.
type respCheck struct {
	environmentID, workflowID, versionID string
	reads                                []string // output paths the definition reads
	// found by checkDrift for recordDrift: a shape to learn, the changes
	// to record, and whether the shape was new to this process.
	learn   drift.Shape
	hash    string
	changes []drift.Change
}

// prepareResponseChecks notes a live http attempt's context for the cache
// and the drift check.
func (s *runState) prepareResponseChecks(j *job) {
	if j.step.Type != definition.StepHTTP || j.replayed {
		return
	}
	j.resp = &respCheck{environmentID: s.run.EnvironmentID, workflowID: s.run.WorkflowID, versionID: s.run.VersionID,
		reads: s.def.OutputPathsRead(j.step.ID)}
	if s.run.Mode == run.ModeSandbox {
		// Evaluations replay recorded runs: their calls neither teach nor
		// report drift for the production versions.
		j.resp.versionID = ""
	}
}

// prepareItemResponseChecks: a map item's http call goes through the
// cache like a step's; shapes are learned from steps only.
func prepareItemResponseChecks(j *job, r *ent.Run) {
	if j.step.Type == definition.StepHTTP {
		j.resp = &respCheck{environmentID: r.EnvironmentID}
	}
}

func (e *Service) responseCacheStore() *respcache.Cache {
	e.resp.once.Do(func() { e.resp.cache = respcache.New(e.client) })
	return e.resp.cache
}

// responseCache is the cache an http attempt with a cache policy calls
// through, or nil.
func (e *Service) responseCache(j *job) steps.ResponseCache {
	if j.resp == nil || j.step.Cache == nil || j.step.SideEffect {
		return nil
	}
	return e.responseCacheStore().For(j.tenantID, j.resp.environmentID, j.step.Credential)
}

// checkDrift compares a successful response's shape with the shapes learned
// for the step under the run's version. A removed or retyped field that the
// definition reads fails the attempt with schema_drift naming it; any other
// change of a shape not seen before is left for recordDrift.
func (e *Service) checkDrift(ctx context.Context, j *job, out map[string]any) error {
	if j.resp == nil || j.resp.versionID == "" || out == nil {
		return nil
	}
	if st := statusOf(out); st < 200 || st > 299 {
		return nil // shapes are of successful responses (expect.status may list others)
	}
	rc := j.resp
	shape := drift.Of(out["body"])
	rc.hash = shape.Hash()
	memo := rc.versionID + "|" + j.step.ID + "|" + rc.hash
	if _, ok := e.resp.known.Load(memo); ok {
		return nil
	}
	var learned []drift.Shape
	err := store.InTenant(viewer.SystemContext(ctx, j.tenantID), e.client, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT shape_hash, paths FROM response_shapes WHERE tenant_id = $1 AND version_id = $2 AND step_id = $3`,
			j.tenantID, rc.versionID, j.step.ID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var hash string
			var raw []byte
			if err := rows.Scan(&hash, &raw); err != nil {
				return err
			}
			if hash == rc.hash {
				learned = nil
				return errShapeKnown
			}
			var sh drift.Shape
			if err := json.Unmarshal(raw, &sh); err != nil {
				return err
			}
			learned = append(learned, sh)
		}
		return rows.Err()
	})
	if errors.Is(err, errShapeKnown) {
		e.rememberShape(memo)
		return nil
	}
	if err != nil {
		// The check could not run; the response is not judged by it.
		e.log.Warn("schema drift check", "run", j.runID, "step", j.step.ID, "err", err)
		return nil
	}
	if len(learned) == 0 {
		rc.learn = shape // the first shape: learned without a change
		return nil
	}
	base := drift.Shape{}
	for _, sh := range learned {
		base.Merge(sh)
	}
	rc.changes = drift.Compare(base, shape, rc.reads)
	if broken := drift.Breaking(rc.changes); len(broken) > 0 {
		rc.changes = broken[:min(len(broken), maxRecordedChanges)]
		parts := make([]string, 0, len(broken))
		for _, c := range broken {
			if c.Kind == drift.Removed {
				parts = append(parts, fmt.Sprintf("field %s was removed", c.Path))
			} else {
				parts = append(parts, fmt.Sprintf("field %s changed type from %s to %s", c.Path, c.From, c.To))
			}
		}
		return &steps.Error{Class: steps.SchemaDrift, Message: "response drifted from the shape learned for this version: " +
			strings.Join(parts, "; ") + " (read by the workflow's expressions)", StatusCode: statusOf(out)}
	}
	if len(learned) >= maxLearnedShapes {
		rc.changes = nil
		return nil
	}
	rc.learn = shape
	if len(rc.changes) > maxRecordedChanges {
		rc.changes = rc.changes[:maxRecordedChanges]
	}
	return nil
}

var errShapeKnown = errors.New("shape known")

func (e *Service) rememberShape(memo string) {
	e.resp.mu.Lock()
	defer e.resp.mu.Unlock()
	if e.resp.count >= maxKnownShapes {
		e.resp.known.Clear()
		e.resp.count = 0
	}
	if _, loaded := e.resp.known.LoadOrStore(memo, struct{}{}); !loaded {
		e.resp.count++
	}
}

func statusOf(out map[string]any) int {
	n, _ := out["status"].(int)
	return n
}

// recordDrift writes, in the finish's transaction, a new shape (once:
// whichever attempt inserts it first) and the changes it brought, and
// emits step.response_changed when the shape is new and changed something;
// or the breaking changes of an attempt that failed for them.
func (s *runState) recordDrift(ctx context.Context, j *job) error {
	rc := j.resp
	if rc == nil || rc.versionID == "" || (rc.learn == nil && len(rc.changes) == 0) {
		return nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	if rc.learn != nil {
		paths, err := json.Marshal(rc.learn)
		if err != nil {
			return err
		}
		var id string
		err = q.QueryRow(ctx, `INSERT INTO response_shapes (id, tenant_id, created_at, workflow_id, version_id, step_id, shape_hash, paths, first_run_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (tenant_id, version_id, step_id, shape_hash) DO NOTHING RETURNING id`,
			ids.New(ids.ResponseShape), s.run.TenantID, s.now, rc.workflowID, rc.versionID, j.step.ID, rc.hash, paths, s.run.ID).Scan(&id)
		if err != nil && !isNoRows(err) {
			return fmt.Errorf("learn response shape: %w", err)
		}
		if isNoRows(err) || len(rc.changes) == 0 {
			return nil // another attempt learned it first, or it was the first
		}
		s.emit(eventtype.StepResponseChanged, j.step.ID, j.attempt, map[string]any{
			"attemptID": j.attemptID, "shapeHash": rc.hash, "changes": changeMaps(rc.changes)})
	}
	for _, c := range rc.changes {
		_, err := q.Exec(ctx, `INSERT INTO drift_changes (id, tenant_id, created_at, workflow_id, version_id, step_id, path, kind, from_type, to_type, breaking, first_run_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULLIF($9, ''), NULLIF($10, ''), $11, $12)
			ON CONFLICT (tenant_id, version_id, step_id, path, kind) DO NOTHING`,
			ids.New(ids.DriftChange), s.run.TenantID, s.now, rc.workflowID, rc.versionID, j.step.ID, c.Path, c.Kind, c.From, c.To, c.Breaking, s.run.ID)
		if err != nil {
			return fmt.Errorf("record drift change: %w", err)
		}
	}
	return nil
}

func changeMaps(cs []drift.Change) []any {
	out := make([]any, 0, len(cs))
	for _, c := range cs {
		m := map[string]any{"path": c.Path, "kind": c.Kind}
		if c.From != "" {
			m["from"] = c.From
		}
		if c.To != "" {
			m["to"] = c.To
		}
		out = append(out, m)
	}
	return out
}

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }

// RunResponseCachePurger purges expired response cache entries until ctx
// ends, one worker at a time (respcache.Cache.RunPurger).
func (e *Service) RunResponseCachePurger(ctx context.Context, db *sql.DB) {
	e.responseCacheStore().RunPurger(ctx, db, e.log)
}
