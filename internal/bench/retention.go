package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// ScenarioRetention is the retention purge (internal/retention) of many
// finished runs while new runs start and finish.
const ScenarioRetention = "retention"

const (
	mSetRetention  = `mutation($in: RetentionPolicyInput!) { setRetentionPolicy(input: $in) { effective { payloadDays } } }`
	qRetentionRuns = `{ retentionRuns(first: 100) { startedAt finishedAt payloadRuns payloadBytes batches error } }`
)

// retentionNote is the payload each run carries in its input (and, through
// its steps, in their outputs and events), so the purge has bytes to clear.
var retentionNote = strings.Repeat("retained payload ", 64)

// retention fills the tenant with RetentionRuns finished 3-step runs with
// payloads (one real run, cloned by SQL through the owner's URL), times
// RetentionProbe sequential 3-step runs (createdAt->finishedAt, the
// server's clock), sets the tenant's policy to payloadDays 0 through
// GraphQL and, as soon as the purge has committed its first batch, times
// the same probes again while it runs. It reports the purge pass's wall
// time, runs purged per second, batches and bytes, both latency sets and
// how many of the second set finished while the pass was still running.
// The workers must purge often (SLUICE_RETENTION_INTERVAL, which the
// command sets); the batch is SLUICE_RETENTION_BATCH.
//
// It changes the tenant's retention policy (every finished run's payloads
// go), so it runs last.
func (s *session) retention(ctx context.Context) error {
	if s.t.DatabaseURL == "" {
		return errors.New("no database URL (Target.DatabaseURL) to clone runs with")
	}
	wf, err := s.deploy(ctx, "retention", noteDefinition())
	if err != nil {
		return err
	}
	// The template: a real run, finished, with payloads.
	tmpl, err := s.c.startRun(ctx, wf, s.envID, map[string]any{"n": 0, "note": retentionNote})
	if err != nil {
		return err
	}
	if r, err := pollEnd(ctx, s.c, tmpl, time.Minute); err != nil {
		return err
	} else if r.Status != "succeeded" {
		return fmt.Errorf("template run %s %s: %s", tmpl, r.Status, r.Error)
	}
	n := s.o.Sizes.RetentionRuns
	began := time.Now()
	if err := cloneRuns(ctx, s.t.DatabaseURL, tmpl, n); err != nil {
		return err
	}
	s.figure(ScenarioRetention, fmt.Sprintf("%d finished runs cloned by SQL (setup)", n), time.Since(began).Seconds(), "s", nil)

	before, _, err := s.retentionProbes(ctx, wf)
	if err != nil {
		return err
	}
	s.probeFigures(fmt.Sprintf("%d sequential 3-step runs before the purge", len(before)), before)

	if _, err := s.c.call(ctx, mSetRetention, map[string]any{"in": map[string]any{"scope": "TENANT", "payloadDays": 0}}); err != nil {
		return err
	}
	set := time.Now()
	// The purge has started once its pass record shows a batch.
	var first retentionPass
	for {
		passes, err := s.retentionPasses(ctx)
		if err != nil {
			return err
		}
		if len(passes) > 0 {
			first = passes[len(passes)-1] // newest first
			break
		}
		if time.Since(set) > 2*time.Minute {
			return errors.New("the retention purge did not start within 2m of setRetentionPolicy (is SLUICE_RETENTION_INTERVAL short?)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
	s.figure(ScenarioRetention, "setRetentionPolicy -> first batch committed", time.Since(set).Seconds(), "s", nil)
	during, ends, err := s.retentionProbes(ctx, wf)
	if err != nil {
		return err
	}
	// Wait for every clone's payloads to be gone and the pass to finish.
	// A pass skips runs another transaction has locked and ends at its first
	// short batch, so the clones may take a second pass: every pass since
	// the policy counts towards them.
	deadline := time.Now().Add(30 * time.Minute)
	var all []retentionPass
	for {
		left, err := unpurgedClones(ctx, s.t.DatabaseURL, tmpl)
		if err != nil {
			return err
		}
		passes, err := s.retentionPasses(ctx)
		if err != nil {
			return err
		}
		all = passes
		first = passes[len(passes)-1]
		if first.Error != "" {
			return fmt.Errorf("retention pass failed: %s", first.Error)
		}
		if left == 0 && !first.FinishedAt.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d cloned runs still had their payloads 30m after setRetentionPolicy", left)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond): // polling interval
		}
	}
	purged := 0
	for _, p := range all {
		purged += p.PayloadRuns
	}
	if purged < n {
		return fmt.Errorf("the passes since setRetentionPolicy purged %d runs' payloads, want at least the %d clones", purged, n)
	}
	if len(all) > 1 {
		s.figure(ScenarioRetention, "purge passes since setRetentionPolicy", float64(len(all)), "", nil)
	}
	kept, err := clonesKept(ctx, s.t.DatabaseURL, tmpl)
	if err != nil {
		return err
	}
	if kept != n {
		return fmt.Errorf("%d of %d cloned runs' tombstones remain after the purge", kept, n)
	}
	overlap := 0
	for _, e := range ends {
		if e.Before(first.FinishedAt) {
			overlap++
		}
	}
	wall := first.FinishedAt.Sub(first.StartedAt)
	s.figure(ScenarioRetention, fmt.Sprintf("purge pass: %d runs' payloads, wall time", first.PayloadRuns), wall.Seconds(), "s", nil)
	s.figure(ScenarioRetention, "purge pass: runs purged per second", float64(first.PayloadRuns)/wall.Seconds(), "runs/s", nil)
	s.figure(ScenarioRetention, "purge pass: batches (transactions)", float64(first.Batches), "", nil)
	s.figure(ScenarioRetention, "purge pass: payload bytes cleared", float64(first.PayloadBytes)/(1<<20), "MiB", nil)
	s.probeFigures(fmt.Sprintf("%d sequential 3-step runs during the purge (%d ended before it finished)", len(during), overlap), during)
	if p := before.Percentile(0.99); p > 0 {
		s.figure(ScenarioRetention, "p99 during the purge / before", float64(during.Percentile(0.99))/float64(p), "x", nil)
	}
	return nil
}

func (s *session) probeFigures(label string, d Sample) {
	s.figure(ScenarioRetention, label+": createdAt->finishedAt p50", ms(d.Median()), "ms", nil)
	s.figure(ScenarioRetention, label+": createdAt->finishedAt p99", ms(d.Percentile(0.99)), "ms", nil)
}

// retentionProbes runs RetentionProbes 3-step runs one after the other and
// returns their createdAt->finishedAt and finishedAt.
func (s *session) retentionProbes(ctx context.Context, wf string) (Sample, []time.Time, error) {
	var out Sample
	var ends []time.Time
	for i := range s.o.Sizes.RetentionProbe {
		id, err := s.c.startRun(ctx, wf, s.envID, map[string]any{"n": i, "note": retentionNote})
		if err != nil {
			return nil, nil, err
		}
		s.mu.Lock()
		s.runs = append(s.runs, id)
		s.mu.Unlock()
		r, err := pollEnd(ctx, s.c, id, 2*time.Minute)
		if err != nil {
			return nil, nil, err
		}
		if r.Status != "succeeded" {
			return nil, nil, fmt.Errorf("run %s %s: %s", id, r.Status, r.Error)
		}
		out = append(out, r.FinishedAt.Sub(r.CreatedAt))
		ends = append(ends, r.FinishedAt)
	}
	return out, ends, nil
}

// retentionPass is one pass record as retentionRuns reads it.
type retentionPass struct {
	StartedAt, FinishedAt     time.Time
	PayloadRuns, PayloadBytes int
	Batches                   int
	Error                     string
}

// retentionPasses reads the tenant's pass records, newest first.
func (s *session) retentionPasses(ctx context.Context) ([]retentionPass, error) {
	d, err := s.c.call(ctx, qRetentionRuns, nil)
	if err != nil {
		return nil, err
	}
	list, _ := d["retentionRuns"].([]any)
	out := make([]retentionPass, 0, len(list))
	for _, e := range list {
		var p retentionPass
		p.StartedAt, _ = time.Parse(time.RFC3339Nano, str(e, "startedAt"))
		p.FinishedAt, _ = time.Parse(time.RFC3339Nano, str(e, "finishedAt"))
		p.Error = str(e, "error")
		for k, v := range map[string]*int{"payloadRuns": &p.PayloadRuns, "payloadBytes": &p.PayloadBytes, "batches": &p.Batches} {
			f, _ := path(e, k).(float64)
			*v = int(f)
		}
		out = append(out, p)
	}
	return out, nil
}

// noteDefinition is 3 chained transform steps that carry the input's note
// along (so step outputs and events hold payloads too).
func noteDefinition() map[string]any {
	def := chainDefinition(3)
	def["input"] = map[string]any{"type": "object", "properties": map[string]any{
		"n": map[string]any{"type": "integer"}, "note": map[string]any{"type": "string"},
	}}
	steps := def["steps"].([]any)
	steps[0].(map[string]any)["output"] = map[string]any{"v": "input.n", "note": "input.note"}
	for i := 1; i < len(steps); i++ {
		steps[i].(map[string]any)["output"] = map[string]any{"v": fmt.Sprintf("steps.s%d.output.v", i), "note": fmt.Sprintf("steps.s%d.output.note", i)}
	}
	return def
}

// cloneBatch is the runs one cloning transaction copies.
const cloneBatch = 5000

// cloneSuffix marks a clone's ids: the template's id, then this and a
// number.
const cloneSuffix = "_rc"

// cloneRuns copies the finished run tmpl n times by SQL, with its steps,
// attempts and events (each with ids of its own), as the owner (who is not
// subject to row-level security), cloneBatch runs per transaction. The
// clones finished when the template did.
func cloneRuns(ctx context.Context, url, tmpl string, n int) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("clone runs: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// id || suffix for every id column, per table. The template's rows are
	// read once (a materialized CTE: without it the planner may scan a table
	// per clone, step_runs and the others having no index led by run_id).
	// The record is built in a LATERAL join: written as (f(x)).* in the
	// select list, Postgres calls f once per column of the table.
	stmts := []string{
		`INSERT INTO runs WITH r AS MATERIALIZED (SELECT * FROM runs WHERE id = $1) SELECT p.* FROM r CROSS JOIN generate_series($2::int, $3::int) g
			CROSS JOIN LATERAL jsonb_populate_record(NULL::runs, to_jsonb(r) || jsonb_build_object(
			'id', r.id || $4::text || g, 'idempotency_key', NULL)) p`,
		`INSERT INTO step_runs WITH x AS MATERIALIZED (SELECT * FROM step_runs WHERE run_id = $1) SELECT p.* FROM x CROSS JOIN generate_series($2::int, $3::int) g
			CROSS JOIN LATERAL jsonb_populate_record(NULL::step_runs, to_jsonb(x) || jsonb_build_object(
			'id', x.id || $4::text || g, 'run_id', x.run_id || $4::text || g, 'current_attempt_id', x.current_attempt_id || $4::text || g)) p`,
		`INSERT INTO step_attempts WITH x AS MATERIALIZED (SELECT * FROM step_attempts WHERE run_id = $1) SELECT p.* FROM x CROSS JOIN generate_series($2::int, $3::int) g
			CROSS JOIN LATERAL jsonb_populate_record(NULL::step_attempts, to_jsonb(x) || jsonb_build_object(
			'id', x.id || $4::text || g, 'run_id', x.run_id || $4::text || g, 'step_run_id', x.step_run_id || $4::text || g)) p`,
		`INSERT INTO run_events WITH x AS MATERIALIZED (SELECT * FROM run_events WHERE run_id = $1) SELECT p.* FROM x CROSS JOIN generate_series($2::int, $3::int) g
			CROSS JOIN LATERAL jsonb_populate_record(NULL::run_events, to_jsonb(x) || jsonb_build_object(
			'id', x.id || $4::text || g, 'run_id', x.run_id || $4::text || g)) p`,
	}
	for lo := 1; lo <= n; lo += cloneBatch {
		hi := min(lo+cloneBatch-1, n)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			for _, st := range stmts {
				if _, err := tx.Exec(ctx, st, tmpl, lo, hi, cloneSuffix); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("clone runs %d-%d: %w", lo, hi, err)
		}
	}
	return nil
}

// unpurgedClones counts the clones of tmpl that still have their payloads.
func unpurgedClones(ctx context.Context, url, tmpl string) (int, error) {
	return countClones(ctx, url, tmpl, " AND payload_purged_at IS NULL")
}

// clonesKept counts the clones of tmpl (tombstones or not).
func clonesKept(ctx context.Context, url, tmpl string) (int, error) {
	return countClones(ctx, url, tmpl, "")
}

func countClones(ctx context.Context, url, tmpl, where string) (int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM runs WHERE id LIKE $1`+where, tmpl+cloneSuffix+"%").Scan(&n)
	return n, err
}
