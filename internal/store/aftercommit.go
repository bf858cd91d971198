package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/errs"
)

// AfterCommit runs fn once the transaction in ctx has committed, and never
// if it rolls back; at once when ctx carries no transaction. Functions of
// one transaction run in the reverse of the order they were added (each
// wraps Ent's commit hooks before it).
func AfterCommit(ctx context.Context, fn func()) {
	tx := ent.TxFromContext(ctx)
	if tx == nil {
		fn()
		return
	}
	tx.OnCommit(func(next ent.Committer) ent.Committer {
		return ent.CommitFunc(func(ctx context.Context, tx *ent.Tx) error {
			if err := next.Commit(ctx, tx); err != nil {
				return err
			}
			fn()
			return nil
		})
	})
}

// ConflictIfExists turns a unique violation into CONFLICT "<what> already
// exists"; other errors pass unchanged (a foreign key, check or not-null
// violation is classified by its kind at the API boundary).
func ConflictIfExists(err error, what string) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code != "23505" {
		return err
	}
	if ent.IsConstraintError(err) {
		return errs.E(errs.Conflict, "%s already exists", what)
	}
	return err
}
