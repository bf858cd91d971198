package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Write-behind: the run state machine changes several rows per step (the attempt,
// the step, the next attempt and step, the events, the run) and reads none
// of them back. Sent one by one, each is a round trip, and round trips are
// most of a step's cost. A write marked with Held (an Ent write) or
// queued with Hold (raw SQL) is instead held by the transaction and sent,
// with the other held writes, as one pgx batch (one round trip, each write
// its own statement) just before the transaction's next statement of any
// kind, Ent or raw, or its commit. Nothing can observe the difference:
// every statement in the transaction first sends what is held, so it sees
// every write before it. A rollback drops what is held.
//
// A batch runs its statements in order, each seeing the ones before it, so
// several held writes may change the same row (a run inserted, then
// updated). Each held write states how many rows it must change; a different count
// fails the transaction (every later statement and the commit return the
// error, and the commit rolls back), as the write would have failed on its
// own.

// maxHeld bounds the writes held at once: a step holds about eight; a
// batch of 64 transforms (internal/runs) would otherwise hold hundreds of
// statements and their arguments until its next read.
const maxHeld = 128

// heldKey is the context key of a Held write.
type heldKey struct{}

type heldMark struct {
	key  string // names the row written, e.g. "step_runs:stp_...", in errors
	rows int    // rows it must change; -1 for any number
}

// Held marks Ent writes made with the returned context in a transaction
// of a store client as held until the transaction's next statement (see
// above). key names the row written; rows is how many rows the write must
// change (-1: any). Only statements Ent sends through Exec (INSERT, UPDATE
// and DELETE without RETURNING) are held; Ent writes that read a result,
// and any write outside a transaction, run at once.
func Held(ctx context.Context, key string, rows int) context.Context {
	return context.WithValue(ctx, heldKey{}, heldMark{key: key, rows: rows})
}

// Driver wraps the Ent SQL driver so that its transactions hold deferred
// writes and share their connection with raw pgx (see Raw).
type Driver struct {
	*entsql.Driver
}

// Tx starts a transaction that holds deferred writes.
func (d Driver) Tx(ctx context.Context) (dialect.Tx, error) {
	return d.BeginTx(ctx, nil)
}

// BeginTx starts a transaction with options that holds deferred writes. It
// takes one connection from the pool for the whole transaction: Ent runs
// through it as a *sql.Conn and raw pgx as the *pgx.Conn beneath, so both
// are in the same transaction. Commit or Rollback returns it to the pool.
// The *pgx.Conn is used after Raw's callback returns, which database/sql
// advises against; it is safe here because the *sql.Conn is this
// transaction's alone until it ends, so nothing else uses the connection,
// and every raw use first checks that the transaction has not ended.
func (d Driver) BeginTx(ctx context.Context, opts *sql.TxOptions) (dialect.Tx, error) {
	txOpts, err := pgxTxOptions(opts)
	if err != nil {
		return nil, err
	}
	conn, err := d.DB().Conn(ctx)
	if err != nil {
		return nil, err
	}
	var pc *pgx.Conn
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("store: database driver connection is %T, not pgx", dc)
		}
		pc = c.Conn()
		return nil
	})
	if err != nil {
		return nil, errors.Join(err, conn.Close())
	}
	// Nothing is sent yet: BEGIN and the tenant's settings are held, and go
	// with the transaction's first statement (in one batch with it when it
	// is a raw one) or not at all when it sends none.
	t := &bufferedTx{ctx: ctx, conn: conn, entConn: entsql.Conn{ExecQuerier: conn}, pc: pc}
	t.held = append(t.held, heldWrite{key: "begin", query: beginSQL(txOpts), rows: -1})
	if tenant, _ := ctx.Value(beginTenantKey{}).(string); tenant != "" {
		t.tenant = tenant
		settings := tenantSettings
		if generic, _ := ctx.Value(genericPlansKey{}).(bool); generic {
			settings = tenantOnly
		}
		t.custom = settings == tenantSettings
		t.held = append(t.held, heldWrite{key: "tenant settings", query: settings, args: []any{tenant}, rows: -1})
	}
	t.opening = len(t.held)
	return t, nil
}

// beginTenantKey carries to BeginTx the tenant a transaction is begun for
// (BeginTenant), so the tenant's settings go with BEGIN.
type beginTenantKey struct{}

// tenantSettings scopes a transaction to the tenant in $1 (see BeginTenant).
const tenantSettings = "SELECT set_config('app.tenant_id', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true)"

// tenantOnly scopes a transaction to the tenant in $1 and leaves the plan
// mode to Postgres (GenericPlans).
const tenantOnly = "SELECT set_config('app.tenant_id', $1, true)"

type genericPlansKey struct{}

// GenericPlans lets the tenant transactions begun with ctx use Postgres's
// default plan mode: a prepared statement's plan may be cached (a generic
// plan) instead of made for every execution, which is most of what a
// statement costs Postgres on the hot path. Only for transactions whose
// statements have one sensible plan whatever the table's size and
// statistics, such as the run state machine's (a row by its primary key,
// with the tenant left to row-level security: see internal/runs); a
// statement with an explicit tenant_id = $n next to an id may be planned,
// on a small table without statistics, as a scan of every row of the
// tenant (BENCHMARKS.md, issue 12).
func GenericPlans(ctx context.Context) context.Context {
	return context.WithValue(ctx, genericPlansKey{}, true)
}

// CachedPlans lets the statements that the transaction in ctx sends from
// now on keep cached plans, as GenericPlans does for a transaction it
// begins, until restore is called, which asks for custom plans again. It
// is for API work whose statements have one sensible plan whatever the
// tables' sizes and statistics (rows by a unique key), done often enough
// that planning them again at every call is a large part of its cost:
// startRun (internal/runs). A transaction that is already in Postgres's
// default mode, or is not a tenant transaction of a store client, is left
// as it is. Nothing is sent: the change goes with the transaction's next
// statement (its opening settings when it has sent none yet).
func CachedPlans(ctx context.Context) (restore func()) {
	t, err := txFrom(ctx)
	if err != nil {
		return func() {}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.custom {
		return func() {}
	}
	t.setCustom(false)
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.setCustom(true)
	}
}

// setCustom switches the plan mode of the statements the transaction sends
// next: custom plans (the tenant's settings) or cached ones (tenantOnly).
// An unsent opening carries the mode; otherwise a change is held. t.mu is
// held.
func (t *bufferedTx) setCustom(custom bool) {
	if t.custom == custom || t.conn == nil || t.err != nil {
		return
	}
	t.custom = custom
	from, to, change := tenantSettings, tenantOnly, cachedPlansSQL
	if custom {
		from, to, change = tenantOnly, tenantSettings, customPlansSQL
	}
	if !t.swapOpening(from, to) {
		t.holdPlanMode(change)
	}
}

// holdPlanMode holds a change of plan mode; one held last and unsent is
// undone instead (the two cancel out).
func (t *bufferedTx) holdPlanMode(query string) {
	if n := len(t.held); n > t.opening && t.held[n-1].key == planModeKey {
		t.held = t.held[:n-1]
		return
	}
	t.held = append(t.held, heldWrite{key: planModeKey, query: query, rows: -1})
}

// swapOpening replaces the unsent opening statement from with to, and
// reports whether there was one to replace.
func (t *bufferedTx) swapOpening(from, to string) bool {
	for i := range t.held[:t.opening] {
		if t.held[i].query == from {
			t.held[i].query = to
			return true
		}
	}
	return false
}

// The plan modes CachedPlans switches between, transaction-local, held
// under planModeKey (a commit drops them when nothing follows).
const (
	planModeKey = "plan mode"

	cachedPlansSQL = "SET LOCAL plan_cache_mode TO DEFAULT"
	customPlansSQL = "SET LOCAL plan_cache_mode = force_custom_plan"
)

// beginSQL is the BEGIN statement of o.
func beginSQL(o pgx.TxOptions) string {
	q := "BEGIN"
	if o.IsoLevel != "" {
		q += " ISOLATION LEVEL " + string(o.IsoLevel)
	}
	if o.AccessMode != "" {
		q += " " + string(o.AccessMode)
	}
	if o.DeferrableMode != "" {
		q += " " + string(o.DeferrableMode)
	}
	return q
}

// pgxTxOptions maps database/sql options to pgx's, as the pgx stdlib driver
// does.
func pgxTxOptions(opts *sql.TxOptions) (pgx.TxOptions, error) {
	var o pgx.TxOptions
	if opts == nil {
		return o, nil
	}
	switch sql.IsolationLevel(opts.Isolation) {
	case sql.LevelDefault:
	case sql.LevelReadUncommitted:
		o.IsoLevel = pgx.ReadUncommitted
	case sql.LevelReadCommitted:
		o.IsoLevel = pgx.ReadCommitted
	case sql.LevelRepeatableRead, sql.LevelSnapshot:
		o.IsoLevel = pgx.RepeatableRead
	case sql.LevelSerializable:
		o.IsoLevel = pgx.Serializable
	default:
		return o, fmt.Errorf("store: isolation level %v is not supported", opts.Isolation)
	}
	if opts.ReadOnly {
		o.AccessMode = pgx.ReadOnly
	}
	return o, nil
}

type heldWrite struct {
	key   string
	query string
	args  []any
	rows  int
}

// bufferedTx is a transaction on one pooled connection, holding deferred
// writes. Ent's statements go through conn, raw pgx through pc, which share
// the connection. It begins lazily: BEGIN and the tenant's settings are its
// first held statements (opening), sent with whatever comes first. Ent's
// session variables (entsql.WithVar) are not supported; the tenant is set
// with set_config (BeginTenant).
type bufferedTx struct {
	ctx     context.Context // of BeginTx; the commit runs with it
	conn    *sql.Conn       // nil once the transaction ended
	entConn entsql.Conn     // Ent's statements, through conn
	pc      *pgx.Conn       // raw statements, on the same connection
	tenant  string          // the tenant whose settings open the transaction, if any
	custom  bool            // the statements sent next are planned at each execution (see CachedPlans)

	// mu guards what follows and orders sending against new writes.
	mu      sync.Mutex
	held    []heldWrite
	opening int   // the first held statements that open the transaction, while unsent
	sent    bool  // something was sent: Postgres has a transaction to end
	err     error // a held write's failure: the transaction cannot commit
}

// hold queues a write, first sending what is held when the queue is full.
func (t *bufferedTx) hold(ctx context.Context, key string, rows int, query string, args []any) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err != nil {
		return t.err
	}
	if t.conn == nil {
		return sql.ErrTxDone
	}
	if len(t.held) >= maxHeld {
		if err := t.sendLocked(ctx); err != nil {
			return err
		}
	}
	t.held = append(t.held, heldWrite{key: key, query: query, args: args, rows: rows})
	return nil
}

// Exec holds a deferred write, or sends what is held and then the statement.
func (t *bufferedTx) Exec(ctx context.Context, query string, args, v any) error {
	if w, ok := ctx.Value(heldKey{}).(heldMark); ok {
		argv, ok := args.([]any)
		if !ok {
			return fmt.Errorf("store: invalid args %T", args)
		}
		if err := t.hold(ctx, w.key, w.rows, query, argv); err != nil {
			return err
		}
		if r, ok := v.(*sql.Result); ok {
			*r = driver.RowsAffected(max(w.rows, 0))
		}
		return nil
	}
	if err := t.send(ctx); err != nil {
		return err
	}
	return t.entConn.Exec(ctx, query, args, v)
}

// Query sends what is held, then runs the query.
func (t *bufferedTx) Query(ctx context.Context, query string, args, v any) error {
	if err := t.send(ctx); err != nil {
		return err
	}
	return t.entConn.Query(ctx, query, args, v)
}

// ExecContext sends what is held, then runs the statement. It answers the
// probe of Raw and Hold with this transaction.
func (t *bufferedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if p, ok := ctx.Value(probeKey{}).(*probe); ok {
		p.tx = t
		return driver.RowsAffected(0), nil
	}
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.conn.ExecContext(ctx, query, args...)
}

// QueryContext sends what is held, then runs the query.
func (t *bufferedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.conn.QueryContext(ctx, query, args...)
}

// Commit sends what is held, checks each write's count, and commits. A
// transaction that sent nothing and holds no write commits without a round
// trip. If a held write fails (now or before), it rolls back and returns
// that failure.
//
// In Postgres's default plan mode (GenericPlans, or a transaction of no
// tenant) the held writes and COMMIT go as one batch, one round trip:
// Postgres checks the counts, each write that must change n rows wrapped in
// a statement that fails on another count (checkedWrite), so COMMIT never
// runs after a wrong one. A transaction that plans every statement at each
// execution (the API's) sends COMMIT as a round trip of its own after the
// writes' batch and checks the counts in between: there the wrappers' plans,
// made at every execution, cost Postgres more than the round trip they save
// (measured, BENCHMARKS.md).
func (t *bufferedTx) Commit() error {
	t.mu.Lock()
	if t.conn == nil {
		t.mu.Unlock()
		return sql.ErrTxDone
	}
	// A plan mode asked for last changes nothing: no statement follows.
	for n := len(t.held); n > t.opening && t.held[n-1].key == planModeKey; n-- {
		t.held = t.held[:n-1]
	}
	if t.err == nil && !t.sent && len(t.held) == t.opening {
		// Nothing to commit: it never began.
		conn := t.conn
		t.conn, t.held = nil, nil
		t.mu.Unlock()
		return conn.Close()
	}
	var err error
	if !t.custom && t.err == nil && len(t.held) > t.opening && t.checkableLocked() {
		err = t.sendWithCommitLocked(t.ctx)
	} else if err = t.sendLocked(t.ctx); err != nil {
		err = rolledBack{err}
	} else {
		err = t.commitLocked(t.ctx)
	}
	conn := t.conn
	t.conn = nil
	sent := t.sent
	t.mu.Unlock()
	if err != nil {
		if !sent {
			return errors.Join(err, conn.Close())
		}
		// Whatever is left (an aborted transaction, or none), end it; a
		// connection that cannot is not pooled.
		return errors.Join(err, t.close(conn, t.rollback()))
	}
	return conn.Close()
}

// commitLocked sends COMMIT; a transaction Postgres had already failed
// answers ROLLBACK, which is an error here.
func (t *bufferedTx) commitLocked(ctx context.Context) error {
	tag, err := t.pc.Exec(ctx, "COMMIT")
	if err == nil && tag.String() != "COMMIT" {
		err = pgx.ErrTxCommitRollback
	}
	if err != nil {
		t.err = err
	}
	return err
}

// sendWithCommitLocked sends the held writes, each that must change a
// number of rows checked by Postgres (checkedWrite), and COMMIT, as one
// batch (flushLocked). A write that fails, or changes another number of
// rows, stops the batch there (Postgres skips the rest, COMMIT included)
// and fails the transaction.
func (t *bufferedTx) sendWithCommitLocked(ctx context.Context) error {
	br, err := t.flushLocked(ctx, true)
	if err != nil {
		return rolledBack{err}
	}
	tag, err := br.Exec()
	if err == nil && tag.String() != "COMMIT" {
		err = pgx.ErrTxCommitRollback
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.err = err
	}
	return err
}

// rolledBack is a Commit failure from before COMMIT ran (a held write
// failed, or changed another number of rows than it must): the transaction
// is rolled back, nothing of it written. Any other Commit failure is one
// of COMMIT itself, after which whether it committed may be unknown.
type rolledBack struct{ error }

func (r rolledBack) Unwrap() error { return r.error }

// failedBeforeCommit reports whether err, from Commit, is a rolledBack.
func failedBeforeCommit(err error) bool {
	var r rolledBack
	return errors.As(err, &r)
}

// checkableLocked reports whether every held write that must change a
// number of rows can be wrapped by checkedWrite: a plain INSERT, UPDATE or
// DELETE (one led by its own WITH could not be nested in the wrapper's
// if that WITH writes too).
func (t *bufferedTx) checkableLocked() bool {
	for _, w := range t.held[t.opening:] {
		if w.rows < 0 {
			continue
		}
		q := strings.TrimSpace(w.query)
		if len(q) < 6 {
			return false
		}
		switch strings.ToUpper(q[:6]) {
		case "INSERT", "UPDATE", "DELETE":
		default:
			return false
		}
	}
	return true
}

// checkedWrite wraps a write (INSERT, UPDATE or DELETE without RETURNING)
// in a statement that fails unless it changes rows rows. The failure is an
// invalid cast of a text that says what happened (wrongCount reads it
// back): an expression Postgres cannot fold before running the write.
// The wrapper's text depends only on the write's text and rows, so its
// plan is cached like the write's.
func checkedWrite(query string, rows int) string {
	n := strconv.Itoa(rows)
	return "WITH w AS (" + query + "\nRETURNING 1) SELECT CASE WHEN count(*) = " + n +
		" THEN 0 ELSE ('" + wrongCountMark + "changed ' || count(*) || ' rows, want " + n + "')::int END FROM w"
}

// wrongCountMark starts the text checkedWrite's failure carries.
const wrongCountMark = "sluice held write: "

// wrongCount turns the failure of a checkedWrite on a wrong count into the
// error flushLocked reports for one ("changed 0 rows, want 1"); other
// errors pass unchanged.
func wrongCount(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" /* invalid_text_representation */ {
		return err
	}
	_, after, ok := strings.Cut(pgErr.Message, wrongCountMark)
	if !ok {
		return err
	}
	return errors.New(strings.TrimSuffix(after, `"`))
}

// heldError is the error of held write i of n (opening of them open the
// transaction) failing with err.
func heldError(i, opening, n int, w heldWrite, err error) error {
	if i < opening {
		return fmt.Errorf("store: %s: %w", w.key, err)
	}
	return fmt.Errorf("store: held write %d of %d (%s): %w: %.200s", i+1-opening, n-opening, w.key, err, w.query)
}

// Rollback drops what is held and rolls back.
func (t *bufferedTx) Rollback() error {
	t.mu.Lock()
	conn := t.conn
	t.conn, t.held = nil, nil
	sent := t.sent
	t.mu.Unlock()
	if conn == nil {
		return sql.ErrTxDone
	}
	if !sent {
		return conn.Close() // it never began
	}
	return t.close(conn, t.rollback())
}

// rollback ends the transaction on the connection, even when the caller's
// context is done.
func (t *bufferedTx) rollback() error {
	_, err := t.pc.Exec(context.WithoutCancel(t.ctx), "ROLLBACK")
	return err
}

// close returns conn to the pool, or closes it when ending its transaction
// failed (err): its state is unknown.
func (t *bufferedTx) close(conn *sql.Conn, err error) error {
	if err != nil {
		// Returning driver.ErrBadConn from Raw makes database/sql close
		// the connection rather than pool it.
		_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		_ = conn.Close()
		return err
	}
	return conn.Close()
}

// send sends what is held.
func (t *bufferedTx) send(ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sendLocked(ctx)
}

// sendLocked runs the held writes as one batch and checks each one's count.
// A failure fails the transaction.
func (t *bufferedTx) sendLocked(ctx context.Context) error {
	br, err := t.flushLocked(ctx, false)
	if br != nil {
		err = br.Close()
		if err != nil {
			t.err = fmt.Errorf("store: held writes: %w", err)
			err = t.err
		}
	}
	return err
}

// sendBefore sends what is held and then queries, in one batch, and
// returns the batch's results positioned at the first query, for the
// caller to read and close. With nothing held it sends nothing and returns
// nil results: the caller sends the queries itself.
func (t *bufferedTx) sendBefore(ctx context.Context, queries ...*pgx.QueuedQuery) (pgx.BatchResults, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.flushLocked(ctx, false, queries...)
}

// flushLocked sends the held writes as one batch and checks each one's
// result; then queries, whose results are left to the caller in the
// returned batch results (nil when nothing was sent). With commit, the
// batch ends with COMMIT instead of queries, and the writes that must
// change a number of rows are checked by Postgres (checkedWrite): COMMIT's
// result is the next one in the returned batch results.
func (t *bufferedTx) flushLocked(ctx context.Context, commit bool, queries ...*pgx.QueuedQuery) (pgx.BatchResults, error) {
	if t.err != nil {
		return nil, t.err
	}
	if t.conn == nil {
		return nil, sql.ErrTxDone
	}
	held, opening := t.held, t.opening
	t.held, t.opening = nil, 0
	if len(held) == 0 {
		return nil, nil
	}
	t.sent = true
	b := &pgx.Batch{}
	for i, w := range held {
		q := w.query
		if commit && i >= opening && w.rows >= 0 {
			q = checkedWrite(q, w.rows)
		}
		b.Queue(q, w.args...)
	}
	if commit {
		b.Queue("COMMIT")
	}
	b.QueuedQueries = append(b.QueuedQueries, queries...)
	br := t.pc.SendBatch(ctx, b)
	for i, w := range held {
		tag, err := br.Exec()
		if err == nil && !commit && w.rows >= 0 && tag.RowsAffected() != int64(w.rows) {
			err = fmt.Errorf("changed %d rows, want %d", tag.RowsAffected(), w.rows)
		}
		if err != nil {
			t.err = heldError(i, opening, len(held), w, wrongCount(err))
			_ = br.Close()
			return nil, t.err
		}
	}
	return br, nil
}
