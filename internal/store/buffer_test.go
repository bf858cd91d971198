package store

import (
	"context"
	"database/sql"
	"os"
	"strings"
	"testing"

	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
)

func adminDB(t *testing.T) *sql.DB {
	t.Helper()
	u := os.Getenv("SLUICE_TEST_ADMIN_URL")
	if u == "" {
		u = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	db, err := Open(context.Background(), u, 2)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// bufferedTxWithTable begins a write-behind transaction with a scratch table.
func bufferedTxWithTable(t *testing.T) *bufferedTx {
	t.Helper()
	tx, err := Driver{entsql.OpenDB(dialect.Postgres, adminDB(t))}.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	bt := tx.(*bufferedTx)
	t.Cleanup(func() { _ = bt.Rollback() })
	if _, err := bt.ExecContext(context.Background(), "CREATE TEMP TABLE held (id int PRIMARY KEY, v text NOT NULL) ON COMMIT DROP"); err != nil {
		t.Fatal(err)
	}
	return bt
}

func heldValues(t *testing.T, tx *bufferedTx) string {
	t.Helper()
	rows, err := tx.QueryContext(context.Background(), "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM held")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var s sql.NullString
	for rows.Next() {
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
	}
	return s.String
}

// Held writes reach the database, in one statement, before the next read.
func TestDeferredWritesAreSentBeforeTheNextRead(t *testing.T) {
	tx := bufferedTxWithTable(t)
	ctx := context.Background()
	for i, v := range []string{"a", "b", "c"} {
		var res sql.Result
		if err := tx.Exec(Deferred(ctx, "held:"+v, 1), "INSERT INTO held (id, v) VALUES ($1, $2)", []any{i + 1, v}, &res); err != nil {
			t.Fatal(err)
		}
	}
	if len(tx.held) != 3 {
		t.Fatalf("%d writes held, want 3", len(tx.held))
	}
	if got := heldValues(t, tx); got != "1=a,2=b,3=c" {
		t.Fatalf("after the read: %q", got)
	}
	if len(tx.held) != 0 {
		t.Fatalf("%d writes still held after a read", len(tx.held))
	}
}

// A second write to a held row sends the first: both apply, in order.
func TestDeferredWritesToOneRowKeepTheirOrder(t *testing.T) {
	tx := bufferedTxWithTable(t)
	ctx := context.Background()
	if err := tx.Exec(Deferred(ctx, "held:1", 1), "INSERT INTO held (id, v) VALUES ($1, $2)", []any{1, "first"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Exec(Deferred(ctx, "held:2", 1), "INSERT INTO held (id, v) VALUES ($1, $2)", []any{2, "other"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Exec(Deferred(ctx, "held:1", 1), "UPDATE held SET v = v || $1 WHERE id = $2", []any{"+second", 1}, nil); err != nil {
		t.Fatal(err)
	}
	if got := heldValues(t, tx); got != "1=first+second,2=other" {
		t.Fatalf("got %q", got)
	}
}

// A held write that changes another number of rows than it must fails the
// transaction when sent; one allowed any number does not.
func TestDeferredWriteCountIsChecked(t *testing.T) {
	tx := bufferedTxWithTable(t)
	ctx := context.Background()
	if err := tx.Exec(Deferred(ctx, "held:1", 1), "INSERT INTO held (id, v) VALUES ($1, $2)", []any{1, "a"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := tx.Exec(Deferred(ctx, "held:9", -1), "UPDATE held SET v = $1 WHERE id = $2", []any{"x", 9}, nil); err != nil {
		t.Fatal(err)
	}
	if got := heldValues(t, tx); got != "1=a" {
		t.Fatalf("got %q", got)
	}
	if err := tx.Exec(Deferred(ctx, "held:8", 1), "UPDATE held SET v = $1 WHERE id = $2", []any{"x", 8}, nil); err != nil {
		t.Fatal(err)
	}
	err := tx.Commit()
	if err == nil || !strings.Contains(err.Error(), "changed 0 rows, want 1") {
		t.Fatalf("commit with a write that changed nothing: %v", err)
	}
}
