package control

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
)

// ConnectionHooks give oauth2 credentials their connection
// (internal/connections): settings checked before anything is written,
// the connection created and updated in the credential's transaction.
type ConnectionHooks interface {
	ValidateSettings(secret map[string]any, path string) error
	Created(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error
	Rotated(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error
}

// SetConnections registers the connections service.
func (s *Service) SetConnections(h ConnectionHooks) { s.connections = h }

func (s *Service) validateConnection(typ credential.Type, secret map[string]any, path string) error {
	if typ != credential.TypeOauth2 || s.connections == nil {
		return nil
	}
	return s.connections.ValidateSettings(secret, path)
}

func (s *Service) connectionCreated(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error {
	if cred.Type != credential.TypeOauth2 || s.connections == nil {
		return nil
	}
	return s.connections.Created(ctx, c, cred, secret)
}

func (s *Service) connectionRotated(ctx context.Context, c *ent.Client, cred *ent.Credential, secret map[string]any) error {
	if cred.Type != credential.TypeOauth2 || s.connections == nil {
		return nil
	}
	return s.connections.Rotated(ctx, c, cred, secret)
}
