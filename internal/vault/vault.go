// Package vault seals and opens tenant secrets stored in Postgres: the
// versions of credentials and the signing secrets of webhook endpoints,
// each encrypted under its tenant's data key, which the key ring unwraps.
// Plaintext never leaves the process that asked for it.
package vault

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/credentialversion"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Vault seals and opens secrets with the tenants' data keys.
type Vault struct {
	keys *secrets.KeyRing
}

// New returns a Vault over keys.
func New(keys *secrets.KeyRing) *Vault { return &Vault{keys: keys} }

// dataKey unwraps the viewer's tenant data key.
func (v *Vault) dataKey(ctx context.Context, c *ent.Client) ([]byte, error) {
	vw := viewer.FromContext(ctx)
	t, err := c.Tenant.Get(ctx, vw.TenantID)
	if err != nil {
		return nil, fmt.Errorf("load tenant key: %w", err)
	}
	return v.keys.UnwrapDataKey(t.ID, t.MasterKeyID, t.DataKey)
}

// SealCredential encrypts secret as version n of credential credID and
// returns its ciphertext and fingerprint.
func (v *Vault) SealCredential(ctx context.Context, c *ent.Client, credID string, n int, secret map[string]any) (ciphertext []byte, fingerprint string, err error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, "", err
	}
	plain, err := json.Marshal(secret)
	if err != nil {
		return nil, "", err
	}
	ct, err := secrets.Seal(key, secrets.AAD{TenantID: viewer.FromContext(ctx).TenantID, CredentialID: credID, Version: n}, plain)
	if err != nil {
		return nil, "", err
	}
	return ct, secrets.Fingerprint(key, secret), nil
}

// OpenCredential decrypts the current version of a named credential in an
// environment, for step executors.
func (v *Vault) OpenCredential(ctx context.Context, c *ent.Client, environmentID, name string) (credential.Type, map[string]any, error) {
	cred, err := c.Credential.Query().Where(credential.EnvironmentID(environmentID), credential.Name(name)).Only(ctx)
	if ent.IsNotFound(err) {
		return "", nil, errs.E(errs.NotFound, "credential %q not found in the run's environment", name)
	}
	if err != nil {
		return "", nil, err
	}
	return v.open(ctx, c, cred)
}

// OpenCredentialByID decrypts the current version of a credential named by
// id (a PagerDuty routing key, for escalations).
func (v *Vault) OpenCredentialByID(ctx context.Context, c *ent.Client, id string) (credential.Type, map[string]any, error) {
	cred, err := c.Credential.Get(ctx, id)
	if ent.IsNotFound(err) {
		return "", nil, errs.NotFoundf("credential", id)
	}
	if err != nil {
		return "", nil, err
	}
	return v.open(ctx, c, cred)
}

func (v *Vault) open(ctx context.Context, c *ent.Client, cred *ent.Credential) (credential.Type, map[string]any, error) {
	cv, err := cred.QueryVersions().Where(credentialversion.Version(cred.CurrentVersion)).Only(ctx)
	if err != nil {
		return "", nil, fmt.Errorf("load credential version: %w", err)
	}
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return "", nil, err
	}
	plain, err := secrets.Open(key, secrets.AAD{TenantID: cred.TenantID, CredentialID: cred.ID, Version: cv.Version}, cv.Ciphertext)
	if err != nil {
		return "", nil, err
	}
	var secret map[string]any
	if err := json.Unmarshal(plain, &secret); err != nil {
		return "", nil, fmt.Errorf("decode credential: %w", err)
	}
	return cred.Type, secret, nil
}

// SealWebhookSecret encrypts an endpoint's signing secret like a
// credential version.
func (v *Vault) SealWebhookSecret(ctx context.Context, c *ent.Client, endpointID string, version int, secret string) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	return secrets.Seal(key, secrets.AAD{TenantID: viewer.FromContext(ctx).TenantID, CredentialID: endpointID, Version: version}, []byte(secret))
}

// OpenWebhookSecret decrypts version of an endpoint's signing secret.
func (v *Vault) OpenWebhookSecret(ctx context.Context, c *ent.Client, ep *ent.WebhookEndpoint, version int, sealed []byte) (string, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return "", err
	}
	b, err := secrets.Open(key, secrets.AAD{TenantID: ep.TenantID, CredentialID: ep.ID, Version: version}, sealed)
	return string(b), err
}

// CallbackKey returns the viewer's tenant's key for the callback tokens of
// wait steps: derived from the tenant's data key, so that a token can be
// computed again from what it names and never has to be stored.
func (v *Vault) CallbackKey(ctx context.Context, c *ent.Client) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("sluice:v1:callback-token"))
	return mac.Sum(nil), nil
}
