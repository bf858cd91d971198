package schemadiff_test

import (
	"context"
	"os"
	"testing"

	"github.com/sluicehq/sluice/internal/schemadiff"
)

// TestMigrationsMatchSchema fails when ent/schema changed without a
// migration: run `sluice migrate diff NAME` from the repository root.
func TestMigrationsMatchSchema(t *testing.T) {
	admin := os.Getenv("SLUICE_TEST_ADMIN_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	pending, err := schemadiff.Check(context.Background(), admin, "../../migrations")
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if pending != "" {
		t.Fatalf("migrations disagree with ent/schema; `sluice migrate diff NAME` would write:\n%s", pending)
	}
}
