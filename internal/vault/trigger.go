package vault

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/viewer"
)

// SealTriggerSecret encrypts version of an inbound trigger's secret under
// the viewer's tenant data key, bound to the trigger's id.
func (v *Vault) SealTriggerSecret(ctx context.Context, c *ent.Client, triggerID string, version int, secret string) ([]byte, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return nil, err
	}
	return secrets.Seal(key, secrets.AAD{TenantID: viewer.FromContext(ctx).TenantID, CredentialID: triggerID, Version: version}, []byte(secret))
}

// OpenTriggerSecret decrypts version of an inbound trigger's secret.
func (v *Vault) OpenTriggerSecret(ctx context.Context, c *ent.Client, triggerID string, version int, sealed []byte) (string, error) {
	key, err := v.dataKey(ctx, c)
	if err != nil {
		return "", err
	}
	b, err := secrets.Open(key, secrets.AAD{TenantID: viewer.FromContext(ctx).TenantID, CredentialID: triggerID, Version: version}, sealed)
	return string(b), err
}
