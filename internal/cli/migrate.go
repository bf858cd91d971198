package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/schemadiff"
	"github.com/sluicehq/sluice/internal/store"
)

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: sluice migrate up|down|status|diff NAME")
	}
	if args[0] == "sum" {
		// After adding or editing a hand-written migration.
		return schemadiff.RewriteSum("migrations")
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("DATABASE_URL (the schema owner) is required")
	}
	if args[0] == "diff" {
		if len(args) != 2 {
			return errors.New("usage: sluice migrate diff NAME (run from the repository root)")
		}
		wrote, err := schemadiff.Write(ctx, cfg.DatabaseURL, "migrations", args[1])
		if err != nil {
			return err
		}
		if !wrote {
			fmt.Fprintln(stdout, "migrations already match ent/schema")
		}
		return nil
	}
	db, err := store.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := store.NewMigrator(db)
	if err != nil {
		return err
	}
	switch args[0] {
	case "up":
		return m.Up(ctx, cfg.DatabaseAppURL, stdout)
	case "down":
		return m.Down(ctx, stdout)
	case "status":
		return m.Status(ctx, stdout)
	default:
		return fmt.Errorf("unknown migrate command %q (want up, down, status or diff)", args[0])
	}
}
