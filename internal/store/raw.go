package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/ent"
)

// Querier runs raw pgx SQL in the tenant transaction of a context, on the
// connection Ent uses, so raw statements and Ent's see each other's writes
// and commit or roll back together. Each method first sends the writes the
// transaction holds (Held, Hold), so it sees them too. The methods have
// pgx's semantics (placeholders $1, $2, ...; pgx types); as with pgx, rows
// from Query must be closed before the transaction's next statement, Ent's
// included, and a failed statement aborts the transaction. A Querier is
// only valid until its transaction ends; after that every method fails
// with sql.ErrTxDone.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Raw returns a Querier for the transaction in ctx (ent.TxFromContext, as
// InTenant sets it), which must have been begun through a client of
// NewClient. Outside such a transaction it returns an error.
func Raw(ctx context.Context) (Querier, error) {
	t, err := txFrom(ctx)
	if err != nil {
		return nil, err
	}
	return rawTx{t}, nil
}

// Hold queues a raw SQL write in the transaction in ctx, with the rules of
// Held: it is sent in one batch with the other held writes before the
// transaction's next statement or its commit, in the order held, dropped
// on rollback; key names the row written (in errors); rows is how many
// rows it must change (-1: any), and another count fails the transaction. args are not copied: do not change them after.
// Outside a transaction of a store client it returns an error.
func Hold(ctx context.Context, key string, rows int, sql string, args ...any) error {
	t, err := txFrom(ctx)
	if err != nil {
		return err
	}
	return t.hold(ctx, key, rows, sql, args)
}

var errNoTx = errors.New("store: no transaction of a store client in context")

// probeKey marks the context of the ExecContext call with which txFrom asks
// Ent's transaction for the dialect.Tx beneath it: Ent passes the call
// through, and bufferedTx.ExecContext answers instead of running it.
type probeKey struct{}

type probe struct{ tx *bufferedTx }

// probeSQL is what a transaction of another driver would run: nothing.
const probeSQL = "-- store: probe"

func txFrom(ctx context.Context) (*bufferedTx, error) {
	return txOf(ctx, ent.TxFromContext(ctx))
}

// txOf is the bufferedTx beneath tx, or errNoTx.
func txOf(ctx context.Context, tx *ent.Tx) (*bufferedTx, error) {
	if tx == nil {
		return nil, errNoTx
	}
	p := &probe{}
	if _, err := tx.ExecContext(context.WithValue(ctx, probeKey{}, p), probeSQL); err != nil {
		return nil, err
	}
	if p.tx == nil {
		return nil, errNoTx
	}
	return p.tx, nil
}

// rawTx is the Querier of a bufferedTx. A raw statement goes in one batch
// with the writes held before it (BEGIN and the tenant's settings, for the
// transaction's first statement): one round trip for both.
type rawTx struct{ t *bufferedTx }

func (r rawTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br, err := r.t.sendBefore(ctx, &pgx.QueuedQuery{SQL: sql, Arguments: args})
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if br == nil {
		return r.t.pc.Exec(ctx, sql, args...)
	}
	tag, err := br.Exec()
	return tag, errors.Join(err, br.Close())
}

func (r rawTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br, err := r.t.sendBefore(ctx, &pgx.QueuedQuery{SQL: sql, Arguments: args})
	if err != nil {
		return nil, err
	}
	if br == nil {
		return r.t.pc.Query(ctx, sql, args...)
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (r rawTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := r.Query(ctx, sql, args...)
	if err != nil {
		return errRow{err}
	}
	return firstRow{rows}
}

func (r rawTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	br, err := r.t.sendBefore(ctx, b.QueuedQueries...)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	if br == nil {
		return r.t.pc.SendBatch(ctx, b)
	}
	return br
}

// batchRows are the rows of a statement sent last in a batch: closing them
// closes the batch.
type batchRows struct {
	pgx.Rows
	br  pgx.BatchResults
	err error // of closing the batch
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if r.br != nil {
		r.err = r.br.Close()
		r.br = nil
	}
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// firstRow is a pgx.Row reading the first of rows, as pgx's QueryRow does.
type firstRow struct{ rows pgx.Rows }

func (r firstRow) Scan(dest ...any) error {
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errRow is a pgx.Row whose query could not be sent.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }
