package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestUnavailable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, dialErr := pgconn.Connect(ctx, "postgres://nobody@127.0.0.1:1/x?sslmode=disable&connect_timeout=2")
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("begin: %w", dialErr), true},
		{&pgconn.PgError{Code: "57P01"}, true},
		{&pgconn.ConnectError{}, true},
		{&pgconn.PgError{Code: "53300"}, true},
		{fmt.Errorf("x: %w", &pgconn.PgError{Code: "08006"}), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{errors.New("no such step"), false},
		{nil, false},
	} {
		if got := Unavailable(tc.err); got != tc.want {
			t.Errorf("Unavailable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
