package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/tenants"
)

// openApplier connects as the owner (DATABASE_URL): only it sees the whole
// tenants registry.
func openApplier(ctx context.Context, getenv func(string) string, out io.Writer) (*tenants.Applier, func(), error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return nil, nil, err
	}
	if cfg.DatabaseURL == "" {
		return nil, nil, errors.New("DATABASE_URL (the schema owner) is required")
	}
	keys, err := keyRing(cfg)
	if err != nil {
		return nil, nil, err
	}
	db, err := store.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return nil, nil, err
	}
	return &tenants.Applier{Client: store.NewClient(db), Keys: keys, Out: out}, func() { db.Close() }, nil
}

func runTenant(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: sluice tenant create|apply|list")
	}
	fs := flag.NewFlagSet("tenant "+args[0], flag.ContinueOnError)
	fs.SetOutput(stdout)
	slug := fs.String("slug", "", "tenant slug (create)")
	name := fs.String("name", "", "tenant display name (create)")
	file := fs.String("f", "", "manifest file (apply)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	switch args[0] {
	case "create":
		if *slug == "" || *name == "" {
			return errors.New("usage: sluice tenant create --slug S --name N")
		}
		m, err := tenants.Default()
		if err != nil {
			return err
		}
		m.Slug, m.Name = *slug, *name
		if err := m.Validate(); err != nil {
			return err
		}
		a, done, err := openApplier(ctx, getenv, io.Discard)
		if err != nil {
			return err
		}
		defer done()
		if _, err := a.Lookup(ctx, *slug); err == nil {
			return fmt.Errorf("tenant %q already exists (use `sluice tenant apply` to update it)", *slug)
		}
		t, err := a.Apply(ctx, m)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, t.ID)
		return nil
	case "apply":
		if *file == "" {
			return errors.New("usage: sluice tenant apply -f FILE")
		}
		data, err := os.ReadFile(*file)
		if err != nil {
			return err
		}
		m, err := tenants.Parse(data)
		if err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		a, done, err := openApplier(ctx, getenv, stdout)
		if err != nil {
			return err
		}
		defer done()
		_, err = a.Apply(ctx, m)
		return err
	case "list":
		a, done, err := openApplier(ctx, getenv, stdout)
		if err != nil {
			return err
		}
		defer done()
		list, err := a.List(ctx)
		if err != nil {
			return err
		}
		for _, t := range list {
			fmt.Fprintf(stdout, "%s\t%s\t%s\n", t.ID, t.Slug, t.Name)
		}
		return nil
	default:
		return fmt.Errorf("unknown tenant command %q (want create, apply or list)", args[0])
	}
}
