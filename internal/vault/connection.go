package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/viewer"
)

// connectionAAD binds a connection's sealed tokens to its tenant, its
// credential and the token version, so a blob cannot be replayed onto
// another connection or an older version.
func connectionAAD(tenantID, credentialID string, version int) secrets.AAD {
	return secrets.AAD{TenantID: tenantID, CredentialID: "connection:" + credentialID, Version: version}
}

// SealConnectionTokens encrypts the tokens (JSON) of an OAuth connection
// as token version `version` of credential credentialID.
func (v *Vault) SealConnectionTokens(ctx context.Context, c *ent.Client, credentialID string, version int, plain []byte) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return secrets.Seal(key, connectionAAD(viewer.FromContext(ctx).TenantID, credentialID, version), plain)
}

// OpenConnectionTokens decrypts what SealConnectionTokens sealed.
func (v *Vault) OpenConnectionTokens(ctx context.Context, c *ent.Client, credentialID string, version int, sealed []byte) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return secrets.Open(key, connectionAAD(viewer.FromContext(ctx).TenantID, credentialID, version), sealed)
}

// ConnectionKey returns the viewer's tenant's key for OAuth authorization
// requests (the PKCE verifier is derived from it and the state, so it is
// never stored).
func (v *Vault) ConnectionKey(ctx context.Context, c *ent.Client) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("sluice:v1:oauth-pkce"))
	return mac.Sum(nil), nil
}
