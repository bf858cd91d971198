package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Connections configures OAuth2 connections (internal/connections).
type Connections struct {
	// RedirectURL is the OAuth callback URL given to providers
	// (SLUICE_OAUTH_REDIRECT_URL). If unset, SLUICE_PUBLIC_URL +
	// /oauth/callback; if that is unset too, in development
	// http://localhost:<port of SLUICE_ADDR>/oauth/callback, in production
	// none (authorizations cannot begin).
	RedirectURL string
	// SweepInterval is how often a worker refreshes connections due for
	// it (SLUICE_CONNECTION_SWEEP_INTERVAL). If unset, 30s.
	SweepInterval time.Duration
	// IdleRefresh is the longest a connection goes without a refresh
	// (SLUICE_CONNECTION_IDLE_REFRESH). If unset, 24h.
	IdleRefresh time.Duration
	// CredentialWaitTimeout is how long a step waits for its connection
	// to be authorized again before it fails with class credential
	// (SLUICE_CREDENTIAL_WAIT_TIMEOUT). If unset, 24h.
	CredentialWaitTimeout time.Duration
}

func loadConnections(getenv func(string) string, publicURL, addr string, production bool, errs *[]error) Connections {
	c := Connections{
		RedirectURL:           strings.TrimSpace(getenv("SLUICE_OAUTH_REDIRECT_URL")),
		SweepInterval:         durationVar(getenv, "SLUICE_CONNECTION_SWEEP_INTERVAL", 30*time.Second, errs),
		IdleRefresh:           durationVar(getenv, "SLUICE_CONNECTION_IDLE_REFRESH", 24*time.Hour, errs),
		CredentialWaitTimeout: durationVar(getenv, "SLUICE_CREDENTIAL_WAIT_TIMEOUT", 24*time.Hour, errs),
	}
	if c.RedirectURL == "" && publicURL != "" {
		c.RedirectURL = publicURL + "/oauth/callback"
	}
	if c.RedirectURL == "" && !production {
		if _, port, err := net.SplitHostPort(addr); err == nil && port != "" && port != "0" {
			c.RedirectURL = "http://localhost:" + port + "/oauth/callback"
		}
	}
	if c.RedirectURL != "" {
		u, err := url.Parse(c.RedirectURL)
		if err != nil || u.Host == "" || (u.Scheme != "https" && (production || u.Scheme != "http")) {
			*errs = append(*errs, fmt.Errorf("SLUICE_OAUTH_REDIRECT_URL must be an absolute https URL (http in development), got %q", c.RedirectURL))
		}
	}
	return c
}
