package cli

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/tenants"
)

// Development defaults: a local Postgres with trust auth, as installed by
// `apt-get install postgresql` and used by `make test`.
const (
	devDatabaseURL    = "postgres://postgres@127.0.0.1:5432/sluice_dev?sslmode=disable"
	devDatabaseAppURL = "postgres://sluice_app:sluice_app@127.0.0.1:5432/sluice_dev?sslmode=disable"
)

// runDev is the all-in-one development process: it creates the database if
// needed, applies migrations, creates the app role, seeds the demo tenant,
// prints a token and serves the API with GraphiQL.
func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	defaults := map[string]string{
		"SLUICE_ENV":       config.EnvDevelopment,
		"DATABASE_URL":     devDatabaseURL,
		"DATABASE_APP_URL": devDatabaseAppURL,
	}
	env := func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return defaults[k]
	}
	cfg, err := config.Load(env)
	if err != nil {
		return err
	}
	if !cfg.Development() {
		return errors.New("sluice dev runs only with SLUICE_ENV=development")
	}
	log := newLogger(stderr, cfg.LogLevel)

	if err := createDatabase(ctx, cfg.DatabaseURL); err != nil {
		return err
	}
	owner, err := store.Open(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	m, err := store.NewMigrator(owner)
	if err != nil {
		owner.Close()
		return err
	}
	if err := m.Up(ctx, cfg.DatabaseAppURL, io.Discard); err != nil {
		owner.Close()
		return err
	}
	owner.Close()

	if cfg.RedisURL == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return fmt.Errorf("embedded redis: %w", err)
		}
		defer mr.Close()
		// miniredis never expires keys on its own; advance its clock.
		go tickMiniredis(ctx, mr)
		cfg.RedisURL = "redis://" + mr.Addr()
		log.Info("using embedded redis", "addr", mr.Addr())
	}

	applier, done, err := openApplier(ctx, env, io.Discard)
	if err != nil {
		return err
	}
	manifest, err := tenants.Default()
	if err != nil {
		done()
		return err
	}
	manifest.Slug, manifest.Name = "demo", "Demo"
	t, err := applier.Apply(ctx, manifest)
	done()
	if err != nil {
		return err
	}
	token, err := mintToken(cfg, t.ID, "dev@sluice.local", []string{"owner"}, 24*time.Hour)
	if err != nil {
		return err
	}

	a, err := openApp(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	host := cfg.Addr
	if strings.HasPrefix(host, ":") {
		host = "localhost" + host
	}
	fmt.Fprintf(stdout, `Sluice development server
  tenant:   demo (%s)
  GraphiQL: http://%s/graphql
  token (owner, 24h):
%s

  curl -s http://%s/graphql -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"query":"{ viewer { tenant { slug } roles } }"}'
`, t.ID, host, token, host)
	wcfg, err := workerConfig(env)
	if err != nil {
		return err
	}
	w := a.newWorker(wcfg)
	werr := make(chan error, 1)
	go func() { werr <- w.Run(ctx) }()
	err = serveHTTP(ctx, a, stdout)
	if wErr := <-werr; err == nil {
		err = wErr
	}
	return err
}

func tickMiniredis(ctx context.Context, mr *miniredis.Miniredis) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			mr.FastForward(100 * time.Millisecond)
		}
	}
}

// createDatabase creates the database named in dbURL when it is missing,
// connecting to the maintenance database "postgres" on the same server.
func createDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" {
		return errors.New("DATABASE_URL names no database")
	}
	u.Path = "/postgres"
	db, err := sql.Open("pgx", u.String())
	if err != nil {
		return err
	}
	defer db.Close()
	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return fmt.Errorf("connect to postgres at %s: %w", u.Host, err)
	}
	if exists {
		return nil
	}
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}
