// Package control is Sluice's control plane: the objects a tenant manages
// (workflows and their versions, environments, deployments, credentials,
// API keys, model prices and budgets) and the cost report. Every mutation
// checks the caller's role, validates its input and writes an audit entry
// in the same transaction, through the tenant-scoped Ent client of the
// context (internal/store), never a pool-wide one.
package control

import (
	"regexp"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/internal/vault"
)

// Service performs control-plane operations for the viewer in the context.
type Service struct {
	vault       *vault.Vault
	revocations any // a KeyRevocationPublisher, or nil
	now         func() time.Time
	gate        DeployGate      // protected environments; nil until set
	connections ConnectionHooks // oauth2 connections, or nil (connections.go)
}

// Options configure a Service.
type Options struct {
	Vault *vault.Vault
	// Revocations, when it implements KeyRevocationPublisher, is told
	// about every revoked API key after commit, so that the live streams
	// the key opened end in every API process.
	Revocations any
	// Now is the clock; if nil, the UTC wall clock at microseconds.
	Now func() time.Time
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	return &Service{vault: o.Vault, revocations: o.Revocations, now: o.Now}
}

var (
	slugPattern = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
)

func quote(s string) string { return strconv.Quote(s) }
