package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
)

// Write-behind: the run engine changes several rows per step (the attempt,
// the step, the next attempt and step, the events, the run) and reads none
// of them back. Sent one by one, each is a round trip, and round trips are
// most of a step's cost. A write marked with Deferred is instead held by
// the transaction and sent, with the other held writes, as one statement
// (data-modifying CTEs) just before the transaction's next statement of any
// kind, or its commit. Nothing can observe the difference: every read in the
// transaction first sends what is held, so it sees every write before it.
//
// Two held writes never touch the same row (Postgres would apply only one of
// them in a single statement): a write whose key is already held sends the
// held ones first. Each held write states how many rows it must change; a
// different count fails the transaction, as the write would have failed on
// its own.

// maxHeld bounds the writes sent as one statement: a step holds about
// eight; a batch of steps would make one statement of hundreds, which
// Postgres plans more slowly than it runs several smaller ones.
const maxHeld = 16

// deferredKey is the context key of a Deferred write.
type deferredKey struct{}

type deferredWrite struct {
	key  string // the row written, e.g. "step_runs:stp_..."
	rows int    // rows it must change; -1 for any number
}

// Deferred marks writes made with the returned context as held until the
// transaction's next statement (see above). key names the row written; rows
// is how many rows the write must change (-1: any). A held statement is an
// INSERT or UPDATE without RETURNING whose only "$" are its placeholders
// (they are renumbered when statements are joined), as Ent builds them.
func Deferred(ctx context.Context, key string, rows int) context.Context {
	return context.WithValue(ctx, deferredKey{}, deferredWrite{key: key, rows: rows})
}

// Driver wraps the Ent SQL driver so that its transactions hold deferred
// writes.
type Driver struct {
	*entsql.Driver
}

// Tx starts a transaction that holds deferred writes.
func (d Driver) Tx(ctx context.Context) (dialect.Tx, error) {
	return d.BeginTx(ctx, nil)
}

// BeginTx starts a transaction with options that holds deferred writes.
func (d Driver) BeginTx(ctx context.Context, opts *sql.TxOptions) (dialect.Tx, error) {
	tx, err := d.Driver.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &bufferedTx{tx: tx.(*entsql.Tx)}, nil
}

type heldWrite struct {
	query string
	args  []any
	rows  int
}

// bufferedTx is a transaction holding deferred writes.
type bufferedTx struct {
	tx   *entsql.Tx
	held []heldWrite
	keys map[string]bool
}

// Exec holds a deferred write, or sends what is held and then the statement.
func (t *bufferedTx) Exec(ctx context.Context, query string, args, v any) error {
	if w, ok := ctx.Value(deferredKey{}).(deferredWrite); ok {
		argv, ok := args.([]any)
		if !ok {
			return fmt.Errorf("store: invalid args %T", args)
		}
		if t.keys[w.key] || len(t.held) >= maxHeld {
			if err := t.send(ctx); err != nil {
				return err
			}
		}
		if t.keys == nil {
			t.keys = map[string]bool{}
		}
		t.keys[w.key] = true
		t.held = append(t.held, heldWrite{query: query, args: argv, rows: w.rows})
		if r, ok := v.(*sql.Result); ok {
			n := w.rows
			if n < 0 {
				n = 0
			}
			*r = driver.RowsAffected(n)
		}
		return nil
	}
	if err := t.send(ctx); err != nil {
		return err
	}
	return t.tx.Exec(ctx, query, args, v)
}

// Query sends what is held, then runs the query.
func (t *bufferedTx) Query(ctx context.Context, query string, args, v any) error {
	if err := t.send(ctx); err != nil {
		return err
	}
	return t.tx.Query(ctx, query, args, v)
}

// ExecContext sends what is held, then runs the statement.
func (t *bufferedTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.tx.ExecContext(ctx, query, args...)
}

// QueryContext sends what is held, then runs the query.
func (t *bufferedTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := t.send(ctx); err != nil {
		return nil, err
	}
	return t.tx.QueryContext(ctx, query, args...)
}

// Commit sends what is held, then commits; if sending fails, it rolls back.
func (t *bufferedTx) Commit() error {
	if err := t.send(context.Background()); err != nil {
		return errors.Join(err, t.tx.Rollback())
	}
	return t.tx.Commit()
}

// Rollback drops what is held and rolls back.
func (t *bufferedTx) Rollback() error {
	t.held, t.keys = nil, nil
	return t.tx.Rollback()
}

var placeholder = regexp.MustCompile(`\$[0-9]+`)

// send runs the held writes as one statement and checks each one's count.
func (t *bufferedTx) send(ctx context.Context) error {
	held := t.held
	t.held, t.keys = nil, nil
	switch len(held) {
	case 0:
		return nil
	case 1:
		res, err := t.tx.ExecContext(ctx, held[0].query, held[0].args...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		return checkRows(held[0], n)
	}
	var b strings.Builder
	var args []any
	b.WriteString("WITH ")
	for i, w := range held {
		if i > 0 {
			b.WriteString(", ")
		}
		offset := len(args)
		q := placeholder.ReplaceAllStringFunc(w.query, func(p string) string {
			n, _ := strconv.Atoi(p[1:])
			return "$" + strconv.Itoa(n+offset)
		})
		fmt.Fprintf(&b, "w%d AS (%s RETURNING 1)", i, q)
		args = append(args, w.args...)
	}
	b.WriteString(" SELECT ")
	for i := range held {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(SELECT count(*) FROM w%d)", i)
	}
	rows, err := t.tx.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return errors.New("store: held writes returned no counts")
	}
	counts := make([]int64, len(held))
	dest := make([]any, len(held))
	for i := range counts {
		dest[i] = &counts[i]
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	for i, w := range held {
		if err := checkRows(w, counts[i]); err != nil {
			return err
		}
	}
	return rows.Close()
}

func checkRows(w heldWrite, n int64) error {
	if w.rows >= 0 && n != int64(w.rows) {
		return fmt.Errorf("store: a held write changed %d rows, want %d: %.120s", n, w.rows, w.query)
	}
	return nil
}
