package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sluicehq/sluice/ent"
)

func adminURL() string {
	if u := os.Getenv("SLUICE_TEST_ADMIN_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// sent counts what each pgx connection sends: statements on their own and
// batches (each one round trip), and the statements in batches.
type sent struct {
	statements, batches, batched atomic.Int64
}

func (s *sent) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	s.statements.Add(1)
	return ctx
}
func (s *sent) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (s *sent) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	s.batches.Add(1)
	return ctx
}
func (s *sent) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	s.batched.Add(1)
}
func (s *sent) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// roundTrips is statements sent alone plus batches.
func (s *sent) roundTrips() int64 { return s.statements.Load() + s.batches.Load() }

// fixture is a pool of the test database with a traced client, and a
// scratch table "held" of its own, dropped after the test.
type fixture struct {
	db     *sql.DB
	client *ent.Client
	sent   *sent
	table  string
}

var tableSeq atomic.Int64

func newFixture(t *testing.T) *fixture {
	t.Helper()
	cfg, err := pgx.ParseConfig(adminURL())
	if err != nil {
		t.Fatal(err)
	}
	s := &sent{}
	cfg.Tracer = s
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(4)
	t.Cleanup(func() { db.Close() })
	f := &fixture{db: db, client: NewClient(db), sent: s,
		table: fmt.Sprintf("store_test_held_%d_%d", os.Getpid(), tableSeq.Add(1))}
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+f.table+` (id int PRIMARY KEY, v text NOT NULL,
		j json, jb jsonb, at timestamptz, n text)`); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { _, _ = db.ExecContext(context.Background(), "DROP TABLE "+f.table) })
	return f
}

// q replaces "held" in a statement with the fixture's table.
func (f *fixture) q(s string) string { return strings.ReplaceAll(s, "held", f.table) }

// begin starts a transaction of the store client and returns a context
// bound to it (as InTenant does) and the transaction beneath Ent's.
func (f *fixture) begin(t *testing.T) (context.Context, *ent.Tx, *bufferedTx) {
	t.Helper()
	tx, err := f.client.Tx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback() })
	ctx := ent.NewContext(ent.NewTxContext(context.Background(), tx), tx.Client())
	bt, err := txFrom(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, tx, bt
}

// entWrite makes a write as Ent's builders do (dialect.Tx.Exec with []any
// arguments).
func entWrite(t *testing.T, ctx context.Context, bt *bufferedTx, query string, args ...any) {
	t.Helper()
	var res sql.Result
	if err := bt.Exec(ctx, query, args, &res); err != nil {
		t.Fatal(err)
	}
}

// values reads the table through Ent's side of the transaction (or the
// pool, with a nil tx): "id=v,...".
func (f *fixture) values(t *testing.T, ctx context.Context, tx *ent.Tx) string {
	t.Helper()
	query := f.q("SELECT coalesce(string_agg(id || '=' || v, ',' ORDER BY id), '') FROM held")
	var rows *sql.Rows
	var err error
	if tx != nil {
		rows, err = tx.QueryContext(ctx, query)
	} else {
		rows, err = f.db.QueryContext(ctx, query)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var s string
	for rows.Next() {
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) inUse(t *testing.T, when string) {
	t.Helper()
	if n := f.db.Stats().InUse; n != 0 {
		t.Fatalf("%s: %d connections in use, want 0", when, n)
	}
}

// Held writes, Ent's and raw, are sent as one batch (one round trip), each
// its own statement, before the next read, and not before.
func TestHeldWritesAreSentInOneBatchBeforeTheNextRead(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	before := f.sent.roundTrips()
	for i, v := range []string{"a", "b", "c"} {
		entWrite(t, Held(ctx, "held:"+v, 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), i+1, v)
	}
	if err := Hold(ctx, "held:4", 1, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 4, "d"); err != nil {
		t.Fatal(err)
	}
	if n := f.sent.roundTrips() - before; n != 0 {
		t.Fatalf("%d round trips while holding, want 0", n)
	}
	if got := f.values(t, ctx, tx); got != "1=a,2=b,3=c,4=d" {
		t.Fatalf("after the read: %q", got)
	}
	// BEGIN is held too, and goes first in the batch.
	if b, s, q := f.sent.batches.Load(), f.sent.batched.Load(), f.sent.statements.Load(); b != 1 || s != 5 {
		t.Fatalf("%d batches of %d statements, want 1 of 5 (and %d statements)", b, s, q)
	}
	if n := f.sent.roundTrips() - before; n != 2 {
		t.Fatalf("%d round trips for the held writes and the read, want 2", n)
	}
	if len(bt.held) != 0 {
		t.Fatalf("%d writes still held after a read", len(bt.held))
	}
}

// Several held writes to one row go in one batch and apply in order. The
// queue holds at most maxHeld writes.
func TestHeldWritesToOneRowKeepTheirOrder(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "first")
	entWrite(t, Held(ctx, "held:2", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 2, "other")
	if err := Hold(ctx, "held:1", 1, f.q("UPDATE held SET v = v || $1 WHERE id = $2"), "+second", 1); err != nil {
		t.Fatal(err)
	}
	if b := f.sent.batches.Load(); b != 0 || len(bt.held) != 4 {
		t.Fatalf("after a second write to a held row: %d batches, %d held; want 0, 4 (BEGIN and 3)", b, len(bt.held))
	}
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("UPDATE held SET v = v || $1 WHERE id = $2"), "+third", 1)
	if got := f.values(t, ctx, tx); got != "1=first+second+third,2=other" {
		t.Fatalf("got %q", got)
	}
	if b := f.sent.batches.Load(); b != 1 {
		t.Fatalf("%d batches for four held writes, want 1", b)
	}

	// BEGIN and maxHeld writes: the last one sends the others first.
	ctx, _, bt = f.begin(t)
	for i := range maxHeld {
		entWrite(t, Held(ctx, fmt.Sprint("held:", 100+i), 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, 'x')"), 100+i)
	}
	if len(bt.held) != 1 {
		t.Fatalf("%d writes held after maxHeld+1, want 1", len(bt.held))
	}
}

// A held write that changes another number of rows than it must fails the
// transaction: later statements and the commit fail, naming the statement,
// and nothing is written. One allowed any number does not.
func TestHeldWriteCountIsChecked(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "a")
	entWrite(t, Held(ctx, "held:9", -1), bt, f.q("UPDATE held SET v = $1 WHERE id = $2"), "x", 9)
	if got := f.values(t, ctx, tx); got != "1=a" {
		t.Fatalf("got %q", got)
	}
	entWrite(t, Held(ctx, "held:2", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 2, "b")
	entWrite(t, Held(ctx, "held:8", 1), bt, f.q("UPDATE held SET v = $1 WHERE id = $2 /* the wrong one */"), "x", 8)
	raw, err := Raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = raw.QueryRow(ctx, "SELECT 1").Scan(&n)
	if err == nil || !strings.Contains(err.Error(), "changed 0 rows, want 1") || !strings.Contains(err.Error(), "the wrong one") {
		t.Fatalf("read after a write that changed nothing: %v", err)
	}
	if err := Hold(ctx, "held:3", 1, f.q("INSERT INTO held (id, v) VALUES (3, 'c')")); err == nil {
		t.Fatal("a write held after a failed one was accepted")
	}
	err = tx.Commit()
	if err == nil || !strings.Contains(err.Error(), "held write 2 of 2 (held:8): changed 0 rows, want 1") {
		t.Fatalf("commit with a write that changed nothing: %v", err)
	}
	if got := f.values(t, context.Background(), nil); got != "" {
		t.Fatalf("after the failed commit the table holds %q", got)
	}
	f.inUse(t, "after a failed commit")

	// A held write that fails in Postgres fails the commit too.
	ctx, tx, _ = f.begin(t)
	if err := Hold(ctx, "held:1", 1, f.q("INSERT INTO held (id, v) VALUES (1, NULL)")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err == nil || !strings.Contains(err.Error(), "not-null") {
		t.Fatalf("commit with a failing held write: %v", err)
	}
	f.inUse(t, "after a commit whose held write failed")
}

// A write held until the commit that changes another number of rows than
// it must fails the commit before COMMIT runs, and nothing is written; with
// every count right, the writes and COMMIT take one round trip (Postgres
// checks the counts), or two in a transaction that plans every statement
// at each execution (the counts are checked between them).
func TestHeldWriteCountIsCheckedBeforeCommit(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "a")
	entWrite(t, Held(ctx, "held:8", 1), bt, f.q("UPDATE held SET v = $1 WHERE id = $2 /* the wrong one */"), "x", 8)
	err := tx.Commit()
	if err == nil || !strings.Contains(err.Error(), "held write 2 of 2 (held:8): changed 0 rows, want 1") {
		t.Fatalf("commit with a write that changed nothing: %v", err)
	}
	if got := f.values(t, context.Background(), nil); got != "" {
		t.Fatalf("after the failed commit the table holds %q", got)
	}
	f.inUse(t, "after a failed commit")

	// When every count is right: one batch (BEGIN, the writes, COMMIT).
	// Two rows for a write that must change two, any for one that may.
	ctx, tx, bt = f.begin(t)
	entWrite(t, Held(ctx, "held:1,2", 2), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2), ($3, $4)"), 1, "a", 2, "a")
	entWrite(t, Held(ctx, "held:any", -1), bt, f.q("UPDATE held SET v = $1 WHERE id = $2"), "b", 1)
	f.commitTakes(t, tx, 1, "commit")
	if got := f.values(t, context.Background(), nil); got != "1=b,2=a" {
		t.Fatalf("after the commit the table holds %q", got)
	}
	f.inUse(t, "after a commit")

	// A write that must change one row and changes two fails the same way.
	ctx, tx, bt = f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("UPDATE held SET v = $1 WHERE id IN (1, 2)"), "c")
	if err := tx.Commit(); err == nil || !strings.Contains(err.Error(), "held write 1 of 1 (held:1): changed 2 rows, want 1") {
		t.Fatalf("commit with a write that changed two rows: %v", err)
	}
	if got := f.values(t, context.Background(), nil); got != "1=b,2=a" {
		t.Fatalf("after the failed commit the table holds %q", got)
	}

	// A counted write led by its own WITH is not wrapped: checked in Go,
	// then COMMIT.
	ctx, tx, bt = f.begin(t)
	entWrite(t, Held(ctx, "held:4", 1), bt, f.q("WITH v(id) AS (VALUES (4)) INSERT INTO held (id, v) SELECT id, 'd' FROM v"))
	f.commitTakes(t, tx, 2, "a commit after a write led by WITH")

	// A tenant transaction (custom plans at each execution): the writes'
	// batch, checked in Go, then COMMIT.
	tx, err = BeginTenant(context.Background(), f.client, "ten_custom")
	if err != nil {
		t.Fatal(err)
	}
	ctx = ent.NewTxContext(context.Background(), tx)
	if err := Hold(ctx, "held:3", 1, f.q("INSERT INTO held (id, v) VALUES (3, 'c')")); err != nil {
		t.Fatal(err)
	}
	f.commitTakes(t, tx, 2, "a tenant transaction's commit")
	if got := f.values(t, context.Background(), nil); got != "1=b,2=a,3=c,4=d" {
		t.Fatalf("after the last commits the table holds %q", got)
	}
	f.inUse(t, "after the commits")
}

// commitTakes commits tx, which must succeed in want round trips; what
// names the case in the error.
func (f *fixture) commitTakes(t *testing.T, tx *ent.Tx, want int64, what string) {
	t.Helper()
	before := f.sent.roundTrips()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := f.sent.roundTrips() - before; got != want {
		t.Errorf("%s took %d round trips, want %d", what, got, want)
	}
}

// Rollback drops held writes without sending them.
func TestRollbackDropsHeldWrites(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "a")
	if err := Hold(ctx, "held:2", 1, f.q("INSERT INTO held (id, v) VALUES (2, 'b')")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if b := f.sent.batches.Load(); b != 0 {
		t.Fatalf("%d batches sent by a rollback", b)
	}
	if got := f.values(t, context.Background(), nil); got != "" {
		t.Fatalf("after rollback the table holds %q", got)
	}
	f.inUse(t, "after rollback")
	raw, err := Raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(ctx, "SELECT 1"); !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("raw statement after rollback: %v", err)
	}
	if err := Hold(ctx, "held:3", 1, "SELECT 1"); !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("held write after rollback: %v", err)
	}
}

// Commit sends what is held; OnCommit hooks run after the commit, when the
// writes are visible outside, and only when it succeeds.
func TestOnCommitHooksRunAfterCommitOnly(t *testing.T) {
	f := newFixture(t)
	after := func(tx *ent.Tx, saw *string) {
		tx.OnCommit(func(next ent.Committer) ent.Committer {
			return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
				if err := next.Commit(ctx, tx); err != nil {
					return err
				}
				*saw = f.values(t, context.Background(), nil)
				return nil
			})
		})
	}
	ctx, tx, _ := f.begin(t)
	saw := "not run"
	after(tx, &saw)
	if err := Hold(ctx, "held:1", 1, f.q("INSERT INTO held (id, v) VALUES (1, 'a')")); err != nil {
		t.Fatal(err)
	}
	if saw != "not run" {
		t.Fatal("hook ran before commit")
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if saw != "1=a" {
		t.Fatalf("the hook saw %q after commit, want 1=a", saw)
	}
	f.inUse(t, "after commit")

	ctx, tx, _ = f.begin(t)
	saw = "not run"
	after(tx, &saw)
	if err := Hold(ctx, "held:1", 1, f.q("UPDATE held SET v = 'b' WHERE id = 2")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err == nil {
		t.Fatal("commit with a held write that changed nothing succeeded")
	}
	if saw != "not run" {
		t.Fatalf("hook ran after a failed commit (saw %q)", saw)
	}

	_, tx, _ = f.begin(t)
	after(tx, &saw)
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if saw != "not run" {
		t.Fatal("commit hook ran on rollback")
	}
}

// Raw pgx and Ent share the transaction: each sees the other's writes,
// held or not, and they commit together.
func TestRawAndEntShareTheTransaction(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	raw, err := Raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "ent"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := raw.QueryRow(ctx, f.q("SELECT v FROM held WHERE id = $1"), 1).Scan(&v); err != nil || v != "ent" {
		t.Fatalf("raw read of Ent's write: %q, %v", v, err)
	}
	if _, err := raw.Exec(ctx, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 2, "raw"); err != nil {
		t.Fatal(err)
	}
	entWrite(t, Held(ctx, "held:3", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 3, "ent held")
	rows, err := raw.Query(ctx, f.q("SELECT v FROM held ORDER BY id"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || strings.Join(got, ",") != "ent,raw,ent held" {
		t.Fatalf("raw read: %q, %v", got, err)
	}
	if err := Hold(ctx, "held:4", 1, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 4, "raw held"); err != nil {
		t.Fatal(err)
	}
	var b pgx.Batch
	b.Queue(f.q("SELECT count(*) FROM held"))
	var n int
	br := raw.SendBatch(ctx, &b)
	if err := br.QueryRow().Scan(&n); err != nil || n != 4 {
		t.Fatalf("raw batch count: %d, %v", n, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if got := f.values(t, ctx, tx); got != "1=ent,2=raw,3=ent held,4=raw held" {
		t.Fatalf("Ent read: %q", got)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := f.values(t, context.Background(), nil); got != "1=ent,2=raw,3=ent held,4=raw held" {
		t.Fatalf("after commit: %q", got)
	}
	f.inUse(t, "after commit")
}

// Held statements are sent as written: a "$" in a string constant is no
// placeholder.
func TestHeldWriteWithDollarInAConstant(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	entWrite(t, Held(ctx, "held:1", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "a")
	entWrite(t, Held(ctx, "held:2", 1), bt, f.q("INSERT INTO held (id, v) VALUES ($1, 'costs $1, or $2' || $2)"), 2, "!")
	if err := Hold(ctx, "held:3", 1, f.q("INSERT INTO held (id, v) VALUES (3, $$ $1 $$)")); err != nil {
		t.Fatal(err)
	}
	if got := f.values(t, ctx, tx); got != "1=a,2=costs $1, or $2!,3= $1 " {
		t.Fatalf("got %q", got)
	}
}

// Arguments as Ent passes them (json.RawMessage for json columns, time
// values, nil) are stored the same held as sent at once.
func TestHeldArgumentsEncodeAsSentAtOnce(t *testing.T) {
	f := newFixture(t)
	ctx, tx, bt := f.begin(t)
	at := time.Date(2026, 3, 29, 1, 30, 0, 123456000, time.FixedZone("x", 5*3600+1800))
	doc := json.RawMessage(`{"b": [1, 2.5, "three"], "a": null}`)
	for i, held := range []bool{false, true} {
		query, args := entsql.Dialect(dialect.Postgres).Insert(f.table).
			Columns("id", "v", "j", "jb", "at", "n").
			Values(i+1, "$x", doc, doc, at, nil).Query()
		if held {
			entWrite(t, Held(ctx, "held:2", 1), bt, query, args...)
			if len(bt.held) != 1 {
				t.Fatal("the write was not held")
			}
		} else if err := bt.Exec(ctx, query, args, nil); err != nil {
			t.Fatal(err)
		}
	}
	var same bool
	var j, jb string
	var got time.Time
	rows, err := tx.QueryContext(ctx, f.q(`SELECT a.v = b.v AND a.j::text = b.j::text AND a.jb = b.jb AND a.at = b.at
		AND b.n IS NULL AND a.n IS NULL, b.j::text, b.jb::text, b.at FROM held a, held b WHERE a.id = 1 AND b.id = 2`))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("no rows: %v", rows.Err())
	}
	if err := rows.Scan(&same, &j, &jb, &got); err != nil {
		t.Fatal(err)
	}
	if !same || j != string(doc) || jb != `{"a": null, "b": [1, 2.5, "three"]}` || !got.Equal(at) {
		t.Fatalf("held row differs: same %v, json %s, jsonb %s, at %v", same, j, jb, got)
	}
}

// Raw and Hold need a transaction of a store client.
func TestRawOutsideATransaction(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := Raw(ctx); !errors.Is(err, errNoTx) {
		t.Fatalf("Raw without a transaction: %v", err)
	}
	if err := Hold(ctx, "k", 1, "SELECT 1"); !errors.Is(err, errNoTx) {
		t.Fatalf("Hold without a transaction: %v", err)
	}
	plain := ent.NewClient(ent.Driver(entsql.OpenDB(dialect.Postgres, f.db)))
	tx, err := plain.Tx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := Raw(ent.NewTxContext(ctx, tx)); !errors.Is(err, errNoTx) {
		t.Fatalf("Raw in a transaction of another driver: %v", err)
	}
}

// Transaction options reach Postgres.
func TestTransactionOptions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tx, err := f.client.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	raw, err := Raw(ent.NewTxContext(ctx, tx))
	if err != nil {
		t.Fatal(err)
	}
	var iso, ro string
	if err := raw.QueryRow(ctx, "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')").Scan(&iso, &ro); err != nil {
		t.Fatal(err)
	}
	if iso != "serializable" || ro != "on" {
		t.Fatalf("isolation %s, read only %s", iso, ro)
	}
	if _, err := f.client.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelLinearizable}); err == nil {
		t.Fatal("an unsupported isolation level was accepted")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	f.inUse(t, "after rollback and a refused begin")
}

// A connection whose transaction cannot end is not pooled again.
func TestBrokenConnectionIsNotPooled(t *testing.T) {
	f := newFixture(t)
	ctx, tx, _ := f.begin(t)
	raw, err := Raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := raw.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	var ok bool
	if err := f.db.QueryRowContext(ctx, "SELECT pg_terminate_backend($1, 10000)", pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminate backend %d: %v, %v", pid, ok, err)
	}
	if err := tx.Commit(); err == nil {
		t.Fatal("commit on a terminated connection succeeded")
	}
	f.inUse(t, "after a failed COMMIT")
	for range f.db.Stats().OpenConnections + 1 {
		var other int
		if err := f.db.QueryRowContext(ctx, "SELECT pg_backend_pid()").Scan(&other); err != nil {
			t.Fatalf("the pool gave out a broken connection: %v", err)
		}
		if other == pid {
			t.Fatal("the terminated connection is back in the pool")
		}
	}
}

// BeginTenant scopes the transaction to the tenant and asks for custom
// plans; nothing is sent until the first statement, and a raw one takes
// BEGIN and the settings in its own round trip. Any tenant id is bound as
// a parameter, never spliced into SQL.
func TestBeginTenantSetsTheTenantWithBegin(t *testing.T) {
	f := newFixture(t)
	for _, tenant := range []string{"ten_01jd5x8k2m", "ten_o'brien"} {
		before := f.sent.roundTrips()
		tx, err := BeginTenant(context.Background(), f.client, tenant)
		if err != nil {
			t.Fatal(err)
		}
		if n := f.sent.roundTrips() - before; n != 0 {
			t.Errorf("%s: %d round trips to begin, want 0", tenant, n)
		}
		ctx := ent.NewTxContext(context.Background(), tx)
		raw, err := Raw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got, mode string
		if err := raw.QueryRow(ctx, "SELECT current_setting('app.tenant_id'), current_setting('plan_cache_mode')").Scan(&got, &mode); err != nil {
			t.Fatal(err)
		}
		if got != tenant || mode != "force_custom_plan" {
			t.Errorf("%s: the transaction has tenant %q and plan_cache_mode %q", tenant, got, mode)
		}
		if n := f.sent.roundTrips() - before; n != 1 {
			t.Errorf("%s: %d round trips to begin and read, want 1", tenant, n)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	// A transaction that sent nothing ends without a round trip.
	before := f.sent.roundTrips()
	tx, err := BeginTenant(context.Background(), f.client, "ten_idle")
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := f.sent.roundTrips() - before; n != 0 {
		t.Errorf("an empty transaction took %d round trips, want 0", n)
	}
	f.inUse(t, "after the rollbacks")
}

// A raw batch goes in one round trip with what is held before it (BEGIN,
// the tenant's settings, held writes), and sees all of it.
func TestRawBatchCarriesWhatIsHeld(t *testing.T) {
	f := newFixture(t)
	before := f.sent.roundTrips()
	tx, err := BeginTenant(context.Background(), f.client, "ten_batch")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	ctx := ent.NewTxContext(context.Background(), tx)
	if err := Hold(ctx, "held:1", 1, f.q("INSERT INTO held (id, v) VALUES ($1, $2)"), 1, "a"); err != nil {
		t.Fatal(err)
	}
	raw, err := Raw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue(f.q("SELECT v FROM held WHERE id = 1"))
	b.Queue("SELECT current_setting('app.tenant_id')")
	br := raw.SendBatch(ctx, b)
	var v, tenant string
	if err := br.QueryRow().Scan(&v); err != nil {
		t.Fatal(err)
	}
	if err := br.QueryRow().Scan(&tenant); err != nil {
		t.Fatal(err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if v != "a" || tenant != "ten_batch" {
		t.Errorf("the batch read %q and tenant %q, want the held write and ten_batch", v, tenant)
	}
	if n := f.sent.roundTrips() - before; n != 1 {
		t.Errorf("%d round trips, want 1", n)
	}
}

// CachedPlans switches a tenant transaction to Postgres's default plan
// mode for the statements that follow, and restore asks for custom plans
// again, neither costing a round trip of its own: before the transaction
// sent anything the opening settings carry the mode; later the change goes
// with the next statement; one asked for last, with nothing after it, is
// not sent at all.
func TestCachedPlansSwitchWithoutRoundTrips(t *testing.T) {
	f := newFixture(t)
	mode := func(ctx context.Context) string {
		t.Helper()
		raw, err := Raw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m string
		if err := raw.QueryRow(ctx, "SELECT current_setting('plan_cache_mode')").Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	var server string
	if err := f.db.QueryRowContext(context.Background(), "SELECT current_setting('plan_cache_mode')").Scan(&server); err != nil {
		t.Fatal(err)
	}

	tx, err := BeginTenant(context.Background(), f.client, "ten_plans")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ent.NewTxContext(context.Background(), tx)
	before := f.sent.roundTrips()
	restore := CachedPlans(ctx)
	if got := mode(ctx); got != server {
		t.Errorf("after CachedPlans, before anything was sent: plan_cache_mode %q, want the server's %q", got, server)
	}
	restore()
	if got := mode(ctx); got != "force_custom_plan" {
		t.Errorf("after restore: plan_cache_mode %q, want force_custom_plan", got)
	}
	restore = CachedPlans(ctx)
	if got := mode(ctx); got != server {
		t.Errorf("after CachedPlans in a begun transaction: plan_cache_mode %q, want %q", got, server)
	}
	if n := f.sent.roundTrips() - before; n != 3 {
		t.Errorf("three reads and two switches took %d round trips, want 3", n)
	}
	// Switched back and forth with nothing between, then back last with
	// nothing after it: nothing to send.
	restore()
	CachedPlans(ctx)()
	batched := f.sent.batched.Load()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if n := f.sent.batched.Load() - batched; n != 0 {
		t.Errorf("the commit sent %d held statements, want none (a last plan mode changes nothing)", n)
	}

	// A transaction begun for cached plans is left as it is.
	tx, err = BeginTenant(GenericPlans(context.Background()), f.client, "ten_plans")
	if err != nil {
		t.Fatal(err)
	}
	ctx = ent.NewTxContext(context.Background(), tx)
	CachedPlans(ctx)()
	if got := mode(ctx); got != server {
		t.Errorf("a GenericPlans transaction after CachedPlans and restore: plan_cache_mode %q, want %q", got, server)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	f.inUse(t, "after the transactions")
}
