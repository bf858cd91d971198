package cli

import (
	"log/slog"

	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/connections"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/vault"
)

// newConnections builds the OAuth2 connections service and plugs it into
// the control plane (settings, creation, rotation) and the run state
// machine (tokens, steps waiting for a connection).
func newConnections(cfg *config.Config, v *vault.Vault, a *app, log *slog.Logger) *connections.Service {
	s := connections.New(connections.Options{
		Client:        a.client,
		Vault:         v,
		Events:        a.webhooks,
		HTTP:          egress.NewClient(egress.Config{AllowCIDRs: cfg.EgressAllowCIDRs}),
		RequireHTTPS:  !cfg.Development(),
		RedirectURL:   cfg.Connections.RedirectURL,
		Log:           log,
		SweepInterval: cfg.Connections.SweepInterval,
		IdleRefresh:   cfg.Connections.IdleRefresh,
	})
	a.control.SetConnections(s)
	a.runs.SetConnections(s, cfg.Connections.CredentialWaitTimeout)
	s.SetWaker(a.runs)
	return s
}
