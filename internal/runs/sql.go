package runs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
)

// The state machine's statements on its hot path: reading and locking a
// run, reading its steps, and writing runs, steps, attempts and events. They
// are plain SQL run through pgx in the tenant transaction of the context
// (store.Raw, store.Hold), so they see Ent's writes in that transaction and
// Ent sees theirs. Every statement names tenant_id besides the row's id;
// Row-Level Security confines it to the transaction's tenant again.
//
// Writes are held (store.Hold) and sent in one batch with the others before
// the transaction's next statement or its commit: a step's result, its
// attempt, the next attempt, its events and the run row cost one round trip.
// Rows are read into Ent's entity structs, bound to the transaction's Ent
// client (Bind), so that the GraphQL layer can return them and load their
// edges as if Ent had read them.

const runColumns = `id, tenant_id, created_at, updated_at, workflow_id, version_id, environment_id, status, mode, input,
	input_hash, output, idempotency_key, replay_of, error_class, error_message, failed_step_id, cost_micro_usd, next_seq,
	step_counts, trace_id, created_by, started_at, finished_at, parent_run_id, parent_step_id, depth, sla_deadline_at, sla_queue_deadline_at,
	env_vars_version, priority, concurrency_key`

func scanRun(row pgx.Row, extra ...any) (*ent.Run, error) {
	r := &ent.Run{}
	dest := []any{&r.ID, &r.TenantID, &r.CreatedAt, &r.UpdatedAt, &r.WorkflowID, &r.VersionID, &r.EnvironmentID, &r.Status, &r.Mode, exactJSONMap{&r.Input},
		&r.InputHash, &r.Output, &r.IdempotencyKey, &r.ReplayOf, &r.ErrorClass, &r.ErrorMessage, &r.FailedStepID, &r.CostMicroUsd, &r.NextSeq,
		&r.StepCounts, &r.TraceID, &r.CreatedBy, &r.StartedAt, &r.FinishedAt, &r.ParentRunID, &r.ParentStepID, &r.Depth,
		&r.SLADeadlineAt, &r.SLAQueueDeadlineAt,
		&r.EnvVarsVersion, &r.Priority, &r.ConcurrencyKey}
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return nil, err
	}
	return r, nil
}

// exactJSONMap scans a JSON object column with its numbers as json.Number:
// pgx would decode them as float64, which rounds ints beyond 2^53, and a
// run's input must read back as it was given (the number rule then types
// it, definition.InputValue).
type exactJSONMap struct{ dst *map[string]any }

// Scan implements sql.Scanner.
func (s exactJSONMap) Scan(src any) error {
	var b []byte
	switch v := src.(type) {
	case nil:
		*s.dst = nil
		return nil
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		return fmt.Errorf("cannot scan %T as a JSON object", src)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*s.dst = m
	return nil
}

// runInput reads a run's input as exactJSONMap does.
func runInput(ctx context.Context, runID string) (map[string]any, error) {
	var in map[string]any
	_, err := scalar(ctx, exactJSONMap{&in}, `SELECT input FROM runs WHERE id = $1`, runID)
	return in, err
}

const stepColumns = `id, tenant_id, created_at, updated_at, run_id, step_id, type, status, attempts, current_attempt_id, ready_at,
	output, error_class, error_message, cost_micro_usd, started_at, finished_at`

func scanSteps(ctx context.Context, rows pgx.Rows) ([]*ent.StepRun, error) {
	defer rows.Close()
	var out []*ent.StepRun
	for rows.Next() {
		s := &ent.StepRun{}
		if err := rows.Scan(&s.ID, &s.TenantID, &s.CreatedAt, &s.UpdatedAt, &s.RunID, &s.StepID, &s.Type, &s.Status, &s.Attempts, &s.CurrentAttemptID, &s.ReadyAt,
			&s.Output, &s.ErrorClass, &s.ErrorMessage, &s.CostMicroUsd, &s.StartedAt, &s.FinishedAt); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if c := ent.FromContext(ctx); c != nil {
		for _, s := range out {
			c.StepRun.Bind(s)
		}
	}
	return out, rows.Err()
}

// bindRun binds r to the Ent client of the transaction in ctx.
func bindRun(ctx context.Context, r *ent.Run) *ent.Run {
	if c := ent.FromContext(ctx); c != nil {
		c.Run.Bind(r)
	}
	return r
}

// lockRunRow reads a run with SELECT ... FOR UPDATE, which serialises every
// change to it, and with it the tenant's webhooks_version, under which the
// outbox caches the tenant's webhook endpoints (see Outbox): no round trip
// of its own.
func lockRunRow(ctx context.Context, runID string) (*ent.Run, int64, lockFlags, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, 0, lockFlags{}, err
	}
	var version int64
	var f lockFlags
	r, err := scanRun(q.QueryRow(ctx, lockRunSQL, runID), f.dest(&version)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, lockFlags{}, errs.NotFoundf("run", runID)
	}
	if err != nil {
		return nil, 0, lockFlags{}, fmt.Errorf("lock run: %w", err)
	}
	return bindRun(ctx, r), version, f, nil
}

// lockFlags are what lockRunSQL reads beside the run: whether its workflow
// is paused in its environment (pause.go), whether its tenant has a cap on
// the steps it runs at once and whether it has held steps (dispatch.go),
// and whether it has a cap on its unfinished runs (runcap.go).
type lockFlags struct {
	paused, capped, tenantHeld, runCapped bool
}

// dest is what lockRunSQL's columns after the run's scan into.
func (f *lockFlags) dest(version *int64) []any {
	return []any{version, &f.paused, &f.capped, &f.tenantHeld, &f.runCapped}
}

// lockRunSQL locks a run by id, with its tenant's webhooks_version and
// whether its workflow is paused in its environment (pause.go). The
// tenant is checked by row-level security (see columnSet.hold for why not
// by the statement too).
var lockRunSQL = `SELECT ` + runColumns + `, (SELECT webhooks_version FROM tenants WHERE id = runs.tenant_id),
		` + pauseExists + `, ` + dispatchFlags + `
		FROM runs WHERE id = $1 FOR UPDATE`

// stepsByID returns the statement reading the steps of a run named in
// stepIDs, and its arguments. Each step is found by its own descent of the
// (tenant_id, run_id, step_id) index. The plain form, `step_id = ANY($3)`,
// was planned, as a cached generic plan, as a scan of the run's every step
// filtered by name: a claim in a run of n steps read n rows, and a run's
// claims n². Up to stepsByIDBranches names, the statement is one equality
// lookup per name (UNION ALL): its cached generic plan costs what a custom
// one does, so Postgres keeps it (an array's lookups cost more in a
// generic plan, which assumes ten elements, than in a custom one, which
// sees two or three, and Postgres then plans them at every execution).
// More names, rare, take one lateral lookup per element of an array.
func stepsByID(tenantID, runID string, stepIDs []string) (string, []any) {
	ids := make([]string, 0, len(stepIDs))
	for _, id := range stepIDs {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if n := len(ids); n > 0 && n <= stepsByIDBranches {
		args := make([]any, 0, 2+n)
		args = append(args, tenantID, runID)
		for _, id := range ids {
			args = append(args, id)
		}
		return stepsByIDUnion[n], args
	}
	return stepsByIDLateral, []any{tenantID, runID, ids}
}

// stepsByIDBranches is how many names stepsByID reads with one equality
// lookup each.
const stepsByIDBranches = 8

// stepsByIDUnion[n] reads the steps of a run ($1, $2) named in $3..$(n+2).
var stepsByIDUnion = func() []string {
	out := make([]string, stepsByIDBranches+1)
	for n := 1; n <= stepsByIDBranches; n++ {
		parts := make([]string, n)
		for i := range n {
			parts[i] = `SELECT ` + stepColumns + ` FROM step_runs WHERE tenant_id = $1 AND run_id = $2 AND step_id = $` + strconv.Itoa(i+3)
		}
		out[n] = strings.Join(parts, "\n\tUNION ALL ")
	}
	return out
}()

// stepsByIDLateral reads the steps of a run ($1, $2) named in the array $3
// (without duplicates); the lateral LIMIT 1 keeps the planner from
// flattening the lookups into a scan of the run's steps.
const stepsByIDLateral = `SELECT s.* FROM unnest($3::text[]) AS k(step_id)
	CROSS JOIN LATERAL (SELECT ` + stepColumns + ` FROM step_runs
		WHERE tenant_id = $1 AND run_id = $2 AND step_id = k.step_id LIMIT 1) AS s`

// lockRunWithSteps is lockRunRow and stepRows of the named steps in one
// round trip: the steps are read after the lock is taken, so they are as
// current as a read after it.
func lockRunWithSteps(ctx context.Context, tenantID, runID string, stepIDs []string) (*ent.Run, int64, lockFlags, []*ent.StepRun, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, 0, lockFlags{}, nil, err
	}
	b := &pgx.Batch{}
	b.Queue(lockRunSQL, runID)
	query, args := stepsByID(tenantID, runID, stepIDs)
	b.Queue(query, args...)
	br := q.SendBatch(ctx, b)
	var version int64
	var f lockFlags
	r, err := scanRun(br.QueryRow(), f.dest(&version)...)
	if err != nil {
		_ = br.Close()
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, 0, lockFlags{}, nil, errs.NotFoundf("run", runID)
		}
		return nil, 0, lockFlags{}, nil, fmt.Errorf("lock run: %w", err)
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, 0, lockFlags{}, nil, fmt.Errorf("load steps: %w", err)
	}
	steps, err := scanSteps(ctx, rows)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, 0, lockFlags{}, nil, fmt.Errorf("load steps: %w", err)
	}
	return bindRun(ctx, r), version, f, steps, nil
}

// stepRows reads a run's steps: those named, or all of them when stepIDs
// is nil.
func stepRows(ctx context.Context, tenantID, runID string, stepIDs []string) ([]*ent.StepRun, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	var rows pgx.Rows
	if stepIDs == nil {
		rows, err = q.Query(ctx, `SELECT `+stepColumns+` FROM step_runs WHERE tenant_id = $1 AND run_id = $2`, tenantID, runID)
	} else {
		query, args := stepsByID(tenantID, runID, stepIDs)
		rows, err = q.Query(ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	return scanSteps(ctx, rows)
}

// stepRowsIn reads a run's steps in the given statuses.
func stepRowsIn(ctx context.Context, tenantID, runID string, statuses ...steprun.Status) ([]*ent.StepRun, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(statuses))
	for i, st := range statuses {
		names[i] = string(st)
	}
	rows, err := q.Query(ctx, `SELECT `+stepColumns+` FROM step_runs WHERE tenant_id = $1 AND run_id = $2 AND status = ANY($3)`, tenantID, runID, names)
	if err != nil {
		return nil, err
	}
	return scanSteps(ctx, rows)
}

// readyTransformRows reads up to limit queued transforms of a run that
// became ready in (after, until], other than those named in except.
func readyTransformRows(ctx context.Context, tenantID, runID string, after, until time.Time, except []string, limit int) ([]*ent.StepRun, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	if except == nil {
		except = []string{}
	}
	rows, err := q.Query(ctx, `SELECT `+stepColumns+` FROM step_runs
		WHERE tenant_id = $1 AND run_id = $2 AND status = 'queued' AND type = 'transform'
		AND ready_at > $3 AND ready_at <= $4 AND NOT (step_id = ANY($5)) LIMIT $6`,
		tenantID, runID, after, until, except, limit)
	if err != nil {
		return nil, err
	}
	return scanSteps(ctx, rows)
}

// attemptIsOpen reports whether attemptID is its step's current attempt and
// the step is queued or running: a look without the run's lock.
func attemptIsOpen(ctx context.Context, tenantID, runID, stepID, attemptID string) (bool, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return false, err
	}
	var open bool
	err = q.QueryRow(ctx, `SELECT COALESCE(current_attempt_id = $4, false) AND status IN ('queued', 'running') FROM step_runs
		WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3`, tenantID, runID, stepID, attemptID).Scan(&open)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return open, err
}

// insertEvent holds the insert of one run event.
func insertEvent(ctx context.Context, ev *ent.RunEvent) error {
	var data any
	if ev.Data != nil {
		data = ev.Data
	}
	return store.Hold(ctx, "run_events:"+ev.RunID+":"+strconv.FormatInt(ev.Seq, 10), 1,
		`INSERT INTO run_events (id, tenant_id, run_id, seq, type, step_id, attempt, data, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		ev.ID, ev.TenantID, ev.RunID, ev.Seq, ev.Type, ev.StepID, ev.Attempt, data, ev.At)
}

// insertEvents holds the insert of a run's events: one statement whatever
// their number.
func insertEvents(ctx context.Context, evs []*ent.RunEvent) error {
	if len(evs) == 1 {
		return insertEvent(ctx, evs[0])
	}
	n := len(evs)
	id, typ, at, seq := make([]string, n), make([]string, n), make([]time.Time, n), make([]int64, n)
	stepID, data := make([]*string, n), make([]*string, n)
	attempt := make([]*int64, n)
	for i, ev := range evs {
		id[i], typ[i], at[i], seq[i], stepID[i] = ev.ID, ev.Type, ev.At, ev.Seq, ev.StepID
		if ev.Attempt != nil {
			a := int64(*ev.Attempt)
			attempt[i] = &a
		}
		if ev.Data != nil {
			b, err := json.Marshal(ev.Data)
			if err != nil {
				return fmt.Errorf("event %s data: %w", ev.Type, err)
			}
			d := string(b)
			data[i] = &d
		}
	}
	first := evs[0]
	return store.Hold(ctx, "run_events:"+first.RunID+":"+strconv.FormatInt(first.Seq, 10)+"+"+strconv.Itoa(n-1), n,
		`INSERT INTO run_events (id, tenant_id, run_id, seq, type, step_id, attempt, data, at)
		SELECT t.id, $1, $2, t.seq, t.type, t.step_id, t.attempt, t.data::jsonb, t.at
		FROM unnest($3::text[], $4::int8[], $5::text[], $6::text[], $7::int8[], $8::text[], $9::timestamptz[])
			AS t(id, seq, type, step_id, attempt, data, at)`,
		first.TenantID, first.RunID, id, seq, typ, stepID, attempt, data, at)
}

// insertAttempt holds the insert of a step's next attempt.
func insertAttempt(ctx context.Context, a *ent.StepAttempt) error {
	return store.Hold(ctx, "step_attempts:"+a.ID, 1,
		`INSERT INTO step_attempts (id, tenant_id, created_at, run_id, step_run_id, step_id, number, status, cost_micro_usd, scheduled_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)`,
		a.ID, a.TenantID, a.CreatedAt, a.RunID, a.StepRunID, a.StepID, a.Number, a.Status, a.ScheduledAt)
}

// insertRun holds the insert of a new run. It comes first in its batch, so
// the rows that reference it follow it.
func insertRun(ctx context.Context, r *ent.Run) error {
	return store.Hold(ctx, "runs:"+r.ID, 1,
		`INSERT INTO runs (id, tenant_id, created_at, updated_at, workflow_id, version_id, environment_id, status, mode, input,
		input_hash, idempotency_key, replay_of, cost_micro_usd, next_seq, trace_id, created_by, parent_run_id, parent_step_id, depth,
		sla_deadline_at, sla_queue_deadline_at, sla_max_cost_micro_usd, sla_check_at,
		env_vars_version, release_id, release_side, priority, concurrency_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23,
		$24, $25, $26, $27, $28)`,
		r.ID, r.TenantID, r.CreatedAt, r.UpdatedAt, r.WorkflowID, r.VersionID, r.EnvironmentID, r.Status, r.Mode, r.Input,
		r.InputHash, r.IdempotencyKey, r.ReplayOf, r.NextSeq, r.TraceID, r.CreatedBy, r.ParentRunID, r.ParentStepID, r.Depth,
		r.SLADeadlineAt, r.SLAQueueDeadlineAt, r.SLAMaxCostMicroUsd, r.SLACheckAt,
		r.EnvVarsVersion, r.ReleaseID, r.ReleaseSide, r.Priority, r.ConcurrencyKey)
}

// insertSteps holds the inserts of a new run's steps and first attempts:
// one statement for the steps and one for the attempts, whatever their
// number.
func insertSteps(ctx context.Context, r *ent.Run, list []*ent.StepRun, attempts []*ent.StepAttempt) error {
	n := len(list)
	id, stepID, typ, status := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	count, current, ready := make([]int64, n), make([]*string, n), make([]*time.Time, n)
	for i, sr := range list {
		id[i], stepID[i], typ[i], status[i] = sr.ID, sr.StepID, sr.Type, string(sr.Status)
		count[i], current[i], ready[i] = int64(sr.Attempts), sr.CurrentAttemptID, sr.ReadyAt
	}
	err := store.Hold(ctx, "step_runs:of:"+r.ID, n,
		`INSERT INTO step_runs (id, tenant_id, created_at, updated_at, run_id, step_id, type, status, attempts, current_attempt_id, ready_at, cost_micro_usd)
		SELECT t.id, $1, $2, $2, $3, t.step_id, t.type, t.status, t.attempts, t.current_attempt_id, t.ready_at, 0
		FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::int8[], $9::text[], $10::timestamptz[])
			AS t(id, step_id, type, status, attempts, current_attempt_id, ready_at)`,
		r.TenantID, r.CreatedAt, r.ID, id, stepID, typ, status, count, current, ready)
	if err != nil || len(attempts) == 0 {
		return err
	}
	m := len(attempts)
	aid, stepRunID, aStepID, number, scheduled := make([]string, m), make([]string, m), make([]string, m), make([]int64, m), make([]time.Time, m)
	for i, a := range attempts {
		aid[i], stepRunID[i], aStepID[i], number[i], scheduled[i] = a.ID, a.StepRunID, a.StepID, int64(a.Number), a.ScheduledAt
	}
	return store.Hold(ctx, "step_attempts:of:"+r.ID, m,
		`INSERT INTO step_attempts (id, tenant_id, created_at, run_id, step_run_id, step_id, number, status, cost_micro_usd, scheduled_at)
		SELECT t.id, $1, $2, $3, t.step_run_id, t.step_id, t.number, 'queued', 0, t.scheduled_at
		FROM unnest($4::text[], $5::text[], $6::text[], $7::int8[], $8::timestamptz[]) AS t(id, step_run_id, step_id, number, scheduled_at)`,
		r.TenantID, r.CreatedAt, r.ID, aid, stepRunID, aStepID, number, scheduled)
}

// newAttempt is a step's next attempt, as insertAttempt writes it.
func newAttempt(tenantID, runID string, sr *ent.StepRun, number int, at, now time.Time) *ent.StepAttempt {
	return &ent.StepAttempt{ID: ids.New(ids.StepAttempt), TenantID: tenantID, CreatedAt: now, RunID: runID, StepRunID: sr.ID,
		StepID: sr.StepID, Number: number, Status: stepattempt.StatusQueued, ScheduledAt: at}
}

// columnSet is the SET list of an UPDATE of one row, built column by
// column: a column set twice keeps its last value, additions accumulate.
type columnSet struct {
	cols []string
	vals []any
	add  []bool // "col = col + value"
}

func (c *columnSet) set(col string, v any) {
	for i, x := range c.cols {
		if x == col {
			c.vals[i], c.add[i] = v, false
			return
		}
	}
	c.cols, c.vals, c.add = append(c.cols, col), append(c.vals, v), append(c.add, false)
}

func (c *columnSet) addTo(col string, n int64) {
	for i, x := range c.cols {
		if x == col {
			// Added to before, or set before: either way the sum.
			c.vals[i] = c.vals[i].(int64) + n
			return
		}
	}
	c.cols, c.vals, c.add = append(c.cols, col), append(c.vals, n), append(c.add, true)
}

func (c *columnSet) merge(o *columnSet) {
	for i, col := range o.cols {
		if o.add[i] {
			c.addTo(col, o.vals[i].(int64))
		} else {
			c.set(col, o.vals[i])
		}
	}
}

func (c *columnSet) columnSetHas(col string) (int, bool) {
	for i, x := range c.cols {
		if x == col {
			return i, true
		}
	}
	return -1, false
}

// hold holds `UPDATE table SET ... WHERE id = $1`, which must change rows
// rows (-1: any). The row's tenant is checked by row-level security, not by
// a `tenant_id = $n` of the statement's own: with one, a plan cached for
// the statement (a generic plan, made while the table is small and has no
// statistics) may scan a tenant-led index by tenant and filter the id,
// reading every row of the tenant; without one, the primary key is the
// only index the statement can use (BENCHMARKS.md, issue 12).
func (c *columnSet) hold(ctx context.Context, table, id string, rows int) error {
	var b strings.Builder
	b.WriteString("UPDATE ")
	b.WriteString(table)
	b.WriteString(" SET ")
	args := make([]any, 0, len(c.cols)+1)
	args = append(args, id)
	for i, col := range c.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		args = append(args, c.vals[i])
		p := "$" + strconv.Itoa(len(args))
		if c.add[i] {
			b.WriteString(col + " = " + col + " + " + p)
		} else {
			b.WriteString(col + " = " + p)
		}
	}
	b.WriteString(" WHERE id = $1")
	return store.Hold(ctx, table+":"+id, rows, b.String(), args...)
}

// stepChange is a change to one step_runs row: what to write, and the same
// change applied to the in-memory copy (apply), field by field.
type stepChange struct {
	columnSet
	apply []func(*ent.StepRun)
}

func changeStep() *stepChange { return &stepChange{} }

func (u *stepChange) on(col string, v any, f func(*ent.StepRun)) *stepChange {
	u.set(col, v)
	u.apply = append(u.apply, f)
	return u
}

func (u *stepChange) SetStatus(v steprun.Status) *stepChange {
	return u.on("status", v, func(s *ent.StepRun) { s.Status = v })
}
func (u *stepChange) SetAttempts(v int) *stepChange {
	return u.on("attempts", v, func(s *ent.StepRun) { s.Attempts = v })
}
func (u *stepChange) SetCurrentAttemptID(v string) *stepChange {
	return u.on("current_attempt_id", v, func(s *ent.StepRun) { s.CurrentAttemptID = &v })
}
func (u *stepChange) ClearCurrentAttemptID() *stepChange {
	return u.on("current_attempt_id", nil, func(s *ent.StepRun) { s.CurrentAttemptID = nil })
}
func (u *stepChange) SetReadyAt(v time.Time) *stepChange {
	return u.on("ready_at", v, func(s *ent.StepRun) { s.ReadyAt = &v })
}
func (u *stepChange) ClearReadyAt() *stepChange {
	return u.on("ready_at", nil, func(s *ent.StepRun) { s.ReadyAt = nil })
}
func (u *stepChange) SetOutput(v json.RawMessage) *stepChange {
	return u.on("output", v, func(s *ent.StepRun) { s.Output = v })
}
func (u *stepChange) SetErrorClass(v string) *stepChange {
	return u.on("error_class", v, func(s *ent.StepRun) { s.ErrorClass = &v })
}
func (u *stepChange) ClearErrorClass() *stepChange {
	return u.on("error_class", nil, func(s *ent.StepRun) { s.ErrorClass = nil })
}
func (u *stepChange) SetErrorMessage(v string) *stepChange {
	return u.on("error_message", v, func(s *ent.StepRun) { s.ErrorMessage = &v })
}
func (u *stepChange) ClearErrorMessage() *stepChange {
	return u.on("error_message", nil, func(s *ent.StepRun) { s.ErrorMessage = nil })
}
func (u *stepChange) AddCostMicroUsd(v int64) *stepChange {
	u.addTo("cost_micro_usd", v)
	u.apply = append(u.apply, func(s *ent.StepRun) { s.CostMicroUsd += v })
	return u
}
func (u *stepChange) SetStartedAt(v time.Time) *stepChange {
	return u.on("started_at", v, func(s *ent.StepRun) { s.StartedAt = &v })
}
func (u *stepChange) SetFinishedAt(v time.Time) *stepChange {
	return u.on("finished_at", v, func(s *ent.StepRun) { s.FinishedAt = &v })
}
func (u *stepChange) ClearFinishedAt() *stepChange {
	return u.on("finished_at", nil, func(s *ent.StepRun) { s.FinishedAt = nil })
}
func (u *stepChange) SetLimitName(v string) *stepChange {
	return u.on("limit_name", v, func(s *ent.StepRun) { s.LimitName = &v })
}
func (u *stepChange) SetUpdatedAt(v time.Time) *stepChange {
	return u.on("updated_at", v, func(s *ent.StepRun) { s.UpdatedAt = v })
}

// attemptChange is a change to one step_attempts row; attempts are not
// kept in memory.
type attemptChange struct{ columnSet }

func changeAttempt() *attemptChange { return &attemptChange{} }

func (u *attemptChange) SetStatus(v stepattempt.Status) *attemptChange {
	u.set("status", v)
	return u
}
func (u *attemptChange) SetStartedAt(v time.Time) *attemptChange {
	u.set("started_at", v)
	return u
}
func (u *attemptChange) SetFinishedAt(v time.Time) *attemptChange {
	u.set("finished_at", v)
	return u
}
func (u *attemptChange) SetErrorClass(v string) *attemptChange {
	u.set("error_class", v)
	return u
}
func (u *attemptChange) SetErrorMessage(v string) *attemptChange {
	u.set("error_message", v)
	return u
}
func (u *attemptChange) SetCalls(v []map[string]any) *attemptChange {
	u.set("calls", v)
	return u
}
func (u *attemptChange) SetCostMicroUsd(v int64) *attemptChange {
	u.set("cost_micro_usd", v)
	return u
}

// runChange is a change to the runs row of a locked run, applied to the
// in-memory copy at flush.
type runChange struct {
	columnSet
	apply []func(*ent.Run)
}

func (u *runChange) on(col string, v any, f func(*ent.Run)) *runChange {
	u.set(col, v)
	u.apply = append(u.apply, f)
	return u
}

// SetVersionID and SetInput change what the Ent schema keeps immutable
// for every other path: a resume on another version or with a patched
// input (ResumeRunWith) is the one place a run's version and input move.
func (u *runChange) SetVersionID(v string) *runChange {
	return u.on("version_id", v, func(r *ent.Run) { r.VersionID = v })
}
func (u *runChange) SetInput(v json.RawMessage) *runChange {
	return u.on("input", v, func(*ent.Run) {}) // the caller set r.Input
}
func (u *runChange) SetStatus(v run.Status) *runChange {
	return u.on("status", v, func(r *ent.Run) { r.Status = v })
}
func (u *runChange) SetOutput(v json.RawMessage) *runChange {
	return u.on("output", v, func(r *ent.Run) { r.Output = v })
}
func (u *runChange) SetErrorClass(v string) *runChange {
	return u.on("error_class", v, func(r *ent.Run) { r.ErrorClass = &v })
}
func (u *runChange) ClearErrorClass() *runChange {
	return u.on("error_class", nil, func(r *ent.Run) { r.ErrorClass = nil })
}
func (u *runChange) SetErrorMessage(v string) *runChange {
	return u.on("error_message", v, func(r *ent.Run) { r.ErrorMessage = &v })
}
func (u *runChange) ClearErrorMessage() *runChange {
	return u.on("error_message", nil, func(r *ent.Run) { r.ErrorMessage = nil })
}
func (u *runChange) SetFailedStepID(v string) *runChange {
	return u.on("failed_step_id", v, func(r *ent.Run) { r.FailedStepID = &v })
}
func (u *runChange) ClearFailedStepID() *runChange {
	return u.on("failed_step_id", nil, func(r *ent.Run) { r.FailedStepID = nil })
}
func (u *runChange) AddCostMicroUsd(v int64) *runChange {
	u.addTo("cost_micro_usd", v)
	u.apply = append(u.apply, func(r *ent.Run) { r.CostMicroUsd += v })
	return u
}
func (u *runChange) SetNextSeq(v int64) *runChange {
	return u.on("next_seq", v, func(r *ent.Run) { r.NextSeq = v })
}
func (u *runChange) SetStepCounts(v map[string]int) *runChange {
	return u.on("step_counts", v, func(r *ent.Run) { r.StepCounts = v })
}
func (u *runChange) SetStartedAt(v time.Time) *runChange {
	return u.on("started_at", v, func(r *ent.Run) { r.StartedAt = &v })
}
func (u *runChange) SetFinishedAt(v time.Time) *runChange {
	return u.on("finished_at", v, func(r *ent.Run) { r.FinishedAt = &v })
}
func (u *runChange) ClearFinishedAt() *runChange {
	return u.on("finished_at", nil, func(r *ent.Run) { r.FinishedAt = nil })
}
func (u *runChange) SetUpdatedAt(v time.Time) *runChange {
	return u.on("updated_at", v, func(r *ent.Run) { r.UpdatedAt = v })
}

const approvalColumns = `id, tenant_id, created_at, updated_at, run_id, step_id, step_run_id, status, message, context,
	approver_roles, approver_subjects, on_timeout, expires_at, decided_by, comment, decided_at`

func scanApproval(ctx context.Context, row pgx.Row) (*ent.ApprovalRequest, error) {
	a := &ent.ApprovalRequest{}
	var message *string
	err := row.Scan(&a.ID, &a.TenantID, &a.CreatedAt, &a.UpdatedAt, &a.RunID, &a.StepID, &a.StepRunID, &a.Status, &message, &a.Context,
		&a.ApproverRoles, &a.ApproverSubjects, &a.OnTimeout, &a.ExpiresAt, &a.DecidedBy, &a.Comment, &a.DecidedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if message != nil {
		a.Message = *message
	}
	if c := ent.FromContext(ctx); c != nil {
		c.ApprovalRequest.Bind(a)
	}
	return a, nil
}

// approvalRow reads an approval request; nil when there is none.
func approvalRow(ctx context.Context, tenantID, id string) (*ent.ApprovalRequest, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanApproval(ctx, q.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approval_requests WHERE id = $1 AND tenant_id = $2`, id, tenantID))
}

// latestApprovalOfStep reads the latest approval request of a step run;
// nil when there is none.
func latestApprovalOfStep(ctx context.Context, tenantID, stepRunID string) (*ent.ApprovalRequest, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	return scanApproval(ctx, q.QueryRow(ctx, `SELECT `+approvalColumns+` FROM approval_requests
		WHERE tenant_id = $1 AND step_run_id = $2 ORDER BY created_at DESC, id DESC LIMIT 1`, tenantID, stepRunID))
}

// insertApproval holds the insert of an approval request.
func insertApproval(ctx context.Context, a *ent.ApprovalRequest) error {
	return store.Hold(ctx, "approval_requests:"+a.ID, 1,
		`INSERT INTO approval_requests (id, tenant_id, created_at, updated_at, run_id, step_id, step_run_id, status, message, context,
		approver_roles, approver_subjects, on_timeout, expires_at) VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`,
		a.ID, a.TenantID, a.CreatedAt, a.RunID, a.StepID, a.StepRunID, a.Status, a.Message, a.Context,
		a.ApproverRoles, a.ApproverSubjects, a.OnTimeout, a.ExpiresAt)
}

// cancelPendingApprovals holds the cancellation of a run's pending
// approval requests.
func cancelPendingApprovals(ctx context.Context, tenantID, runID string, now time.Time) error {
	return store.Hold(ctx, "approval_requests:of:"+runID, -1,
		`UPDATE approval_requests SET status = 'cancelled', updated_at = $3 WHERE tenant_id = $1 AND run_id = $2 AND status = 'pending'`,
		tenantID, runID, now)
}

// decideApproval holds the decision of a pending approval request (status,
// who, when and the comment, if any) and applies it to a.
func decideApproval(ctx context.Context, a *ent.ApprovalRequest, status approvalrequest.Status, by string, comment *string, now time.Time) error {
	err := store.Hold(ctx, "approval_requests:"+a.ID, 1,
		`UPDATE approval_requests SET status = $3, decided_by = $4, decided_at = $5, comment = COALESCE($6, comment), updated_at = $5
		WHERE id = $1 AND tenant_id = $2`, a.ID, a.TenantID, status, by, now, comment)
	if err != nil {
		return err
	}
	a.Status, a.DecidedBy, a.DecidedAt, a.UpdatedAt = status, &by, &now, now
	if comment != nil {
		a.Comment = comment
	}
	return nil
}

// scalar runs a query of one row and one column into dest; found is false
// when there is no row.
func scalar(ctx context.Context, dest any, sql string, args ...any) (found bool, err error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return false, err
	}
	err = q.QueryRow(ctx, sql, args...).Scan(dest)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// attemptStep reads the run and step of an attempt; found is false when
// the attempt is gone.
func attemptStep(ctx context.Context, tenantID, attemptID string) (runID, stepID string, found bool, err error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return "", "", false, err
	}
	err = q.QueryRow(ctx, `SELECT run_id, step_id FROM step_attempts WHERE id = $1 AND tenant_id = $2`, attemptID, tenantID).Scan(&runID, &stepID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", false, nil
	}
	return runID, stepID, err == nil, err
}

// attemptSentAt reads when an at_most_once attempt's call was sent (nil:
// not sent).
func attemptSentAt(ctx context.Context, attemptID string) (*time.Time, error) {
	var at *time.Time
	found, err := scalar(ctx, &at, `SELECT sent_at FROM step_attempts WHERE id = $1`, attemptID) // tenant: RLS (see columnSet.hold)
	if err == nil && !found {
		err = fmt.Errorf("attempt %s not found", attemptID)
	}
	return at, err
}

// markAttemptSent records that an at_most_once attempt's call is about to
// be sent, if the attempt is running and not marked yet; it reports
// whether this call marked it.
func markAttemptSent(ctx context.Context, attemptID string, now time.Time) (bool, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return false, err
	}
	// The tenant is checked by RLS (see columnSet.hold).
	tag, err := q.Exec(ctx, `UPDATE step_attempts SET sent_at = $2 WHERE id = $1 AND status = 'running' AND sent_at IS NULL`,
		attemptID, now)
	return tag.RowsAffected() == 1, err
}

// beat records a running step's heartbeat, if attemptID still holds it.
func beat(ctx context.Context, stepRunID, attemptID string, now time.Time) error {
	q, err := store.Raw(ctx)
	if err != nil {
		return err
	}
	// The tenant is checked by RLS (see columnSet.hold).
	_, err = q.Exec(ctx, `UPDATE step_runs SET updated_at = $3 WHERE id = $1 AND current_attempt_id = $2 AND status = 'running'`,
		stepRunID, attemptID, now)
	return err
}

// takeovers counts a step attempt's step.reclaimed events.
func takeovers(ctx context.Context, tenantID, runID, stepID string, attempt int) (int, error) {
	var n int
	_, err := scalar(ctx, &n, `SELECT count(*) FROM run_events WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 AND type = $4 AND attempt = $5`,
		tenantID, runID, stepID, string(eventtype.StepReclaimed), attempt)
	return n, err
}

// succeededOutput reads the output of a run's step that succeeded; found
// is false when it did not.
func succeededOutput(ctx context.Context, tenantID, runID, stepID string) (out json.RawMessage, found bool, err error) {
	found, err = scalar(ctx, &out, `SELECT output FROM step_runs WHERE tenant_id = $1 AND run_id = $2 AND step_id = $3 AND status = 'succeeded'`,
		tenantID, runID, stepID)
	return out, found, err
}

// storedOutputBytes is the size of a run's stored step outputs.
func storedOutputBytes(ctx context.Context, tenantID, runID string) (int64, error) {
	var n int64
	_, err := scalar(ctx, &n, `SELECT coalesce(sum(octet_length(output::text)), 0) FROM step_runs WHERE tenant_id = $1 AND run_id = $2 AND output IS NOT NULL`,
		tenantID, runID)
	return n, err
}

// countSteps counts a run's steps in each status.
func countSteps(ctx context.Context, tenantID, runID string) (map[string]int, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT status, count(*) FROM step_runs WHERE tenant_id = $1 AND run_id = $2 GROUP BY status`, tenantID, runID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var status string
		var n int
		if err := rows.Scan(&status, &n); err != nil {
			return nil, err
		}
		counts[status] = n
	}
	return counts, rows.Err()
}

// tenantBudget reads the tenant's monthly model budget (nil: none).
func tenantBudget(ctx context.Context, tenantID string) (*int64, error) {
	var budget *int64
	_, err := scalar(ctx, &budget, `SELECT monthly_budget_micro_usd FROM tenants WHERE id = $1`, tenantID)
	return budget, err
}

// monthSpend sums the tenant's model cost in the calendar month (UTC) of now.
func monthSpend(ctx context.Context, tenantID string, now time.Time) (int64, error) {
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var n int64
	_, err := scalar(ctx, &n, `SELECT coalesce(sum(cost_micro_usd), 0) FROM model_calls WHERE tenant_id = $1 AND created_at >= $2`, tenantID, start)
	return n, err
}

// insertModelCall holds the record of a priced model call.
func insertModelCall(ctx context.Context, m *ent.ModelCall) error {
	return store.Hold(ctx, "model_calls:"+m.ID, 1,
		`INSERT INTO model_calls (id, tenant_id, created_at, run_id, step_id, attempt_id, workflow_id, version_id, environment_id, provider, model,
		input_tokens, output_tokens, cached_input_tokens, cost_micro_usd, priced, latency_ms)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)`,
		m.ID, m.TenantID, m.CreatedAt, m.RunID, m.StepID, m.AttemptID, m.WorkflowID, m.VersionID, m.EnvironmentID, m.Provider, m.Model,
		m.InputTokens, m.OutputTokens, m.CachedInputTokens, m.CostMicroUsd, m.Priced, m.LatencyMs)
}

// dueStep is a step whose current attempt the reconciler may send again.
type dueStep struct {
	runID, stepID, stepType, attemptID string
	updatedAt                          time.Time
}

// dueApproval is a pending approval past its expiry.
type dueApproval struct{ id, runID string }

// dueItem is a map step's item the reconciler may send again (mapstep.go).
type dueItem struct {
	id, runID, stepID, status string
	attempts                  int
	updatedAt                 time.Time
}

// dueSet is what dueRows found due in one tenant.
type dueSet struct {
	late, running []dueStep     // queued or waiting steps past due; running steps gone silent
	expired       []dueApproval // pending approvals past expiry
	items         []dueItem     // map items past due or gone silent
	children      []dueStep     // workflow steps waiting on a child that finished (child.go)
}

// dueRows reads, in one round trip, a tenant's queued or waiting steps
// ready before readyBefore, its running steps silent since before
// silentSince, its pending approvals expired by now, its map items due or
// silent by the same bounds, and its workflow steps whose child finished
// before readyBefore; at most 1,000 of each.
func dueRows(ctx context.Context, tenantID string, readyBefore, silentSince, now time.Time) (dueSet, error) {
	var d dueSet
	q, err := store.Raw(ctx)
	if err != nil {
		return d, err
	}
	b := &pgx.Batch{}
	b.Queue(`SELECT run_id, step_id, type, current_attempt_id, updated_at FROM step_runs
		WHERE tenant_id = $1 AND status IN ('queued', 'waiting') AND ready_at <= $2 AND current_attempt_id IS NOT NULL
		AND `+notPausedStep+` LIMIT 1000`, tenantID, readyBefore)
	// A running step keeps its ready_at until it finishes; saying so lets
	// the partial index on ready_at serve this query.
	b.Queue(`SELECT run_id, step_id, type, current_attempt_id, updated_at FROM step_runs
		WHERE tenant_id = $1 AND status = 'running' AND ready_at IS NOT NULL AND updated_at <= $2 AND current_attempt_id IS NOT NULL LIMIT 1000`, tenantID, silentSince)
	// Deployment requests (no run) expire in internal/protection.
	b.Queue(`SELECT id, run_id FROM approval_requests WHERE tenant_id = $1 AND status = 'pending' AND expires_at <= $2 AND run_id IS NOT NULL LIMIT 1000`, tenantID, now)
	b.Queue(dueMapItemsSQL, tenantID, readyBefore, silentSince)
	b.Queue(dueChildStepsSQL, tenantID, readyBefore)
	br := q.SendBatch(ctx, b)
	defer br.Close()
	steps := func() ([]dueStep, error) {
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(r pgx.CollectableRow) (dueStep, error) {
			var d dueStep
			return d, r.Scan(&d.runID, &d.stepID, &d.stepType, &d.attemptID, &d.updatedAt)
		})
	}
	if d.late, err = steps(); err != nil {
		return d, err
	}
	if d.running, err = steps(); err != nil {
		return d, err
	}
	rows, err := br.Query()
	if err != nil {
		return d, err
	}
	d.expired, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (dueApproval, error) {
		var a dueApproval
		return a, r.Scan(&a.id, &a.runID)
	})
	if err != nil {
		return d, err
	}
	if rows, err = br.Query(); err != nil {
		return d, err
	}
	d.items, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (dueItem, error) {
		var it dueItem
		return it, r.Scan(&it.id, &it.runID, &it.stepID, &it.status, &it.attempts, &it.updatedAt)
	})
	if err != nil {
		return d, err
	}
	if d.children, err = steps(); err != nil {
		return d, err
	}
	return d, br.Close()
}
