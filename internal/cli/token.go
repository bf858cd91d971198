package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

func runToken(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "mint" {
		return errors.New("usage: sluice token mint --tenant S --role R [--subject X] [--ttl D]")
	}
	fs := flag.NewFlagSet("token mint", flag.ContinueOnError)
	fs.SetOutput(stdout)
	tenant := fs.String("tenant", "", "tenant slug or id")
	role := fs.String("role", "", "role(s), comma separated: owner, admin, editor, operator, viewer")
	subject := fs.String("subject", "dev@sluice.local", "token subject")
	ttl := fs.Duration("ttl", time.Hour, "token lifetime")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *tenant == "" || *role == "" {
		return errors.New("usage: sluice token mint --tenant S --role R [--subject X] [--ttl D]")
	}
	roles := strings.Split(*role, ",")
	for _, r := range roles {
		if !viewer.KnownRole(r) {
			return fmt.Errorf("unknown role %q", r)
		}
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	if cfg.JWTSecret == "" {
		return errors.New("token mint signs with SLUICE_JWT_SECRET (HS256); with JWKS, tokens come from your identity provider")
	}
	tid, err := resolveTenant(ctx, getenv, *tenant)
	if err != nil {
		return err
	}
	tok, err := mintToken(cfg, tid, *subject, roles, *ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

func mintToken(cfg *config.Config, tenantID, subject string, roles []string, ttl time.Duration) (string, error) {
	return auth.MintHS256([]byte(cfg.JWTSecret), cfg.JWTIssuer, cfg.JWTAudience,
		auth.Claims{Subject: subject, TenantID: tenantID, Roles: roles}, ttl)
}

// resolveTenant accepts a tenant id as is and looks a slug up.
func resolveTenant(ctx context.Context, getenv func(string) string, s string) (string, error) {
	if ids.Valid(s, ids.Tenant) {
		return s, nil
	}
	a, done, err := openApplier(ctx, getenv, io.Discard)
	if err != nil {
		return "", err
	}
	defer done()
	t, err := a.Lookup(ctx, s)
	if err != nil {
		return "", err
	}
	return t.ID, nil
}
