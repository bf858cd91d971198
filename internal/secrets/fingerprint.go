package secrets

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// Fingerprint returns a short identifier of a secret for display
// ("sha256:" + 12 hex chars), so users can tell whether a credential changed
// without the API ever returning its value.
//
// It is an HMAC keyed by the tenant data key, not a plain hash, because
// secrets are often low-entropy (a PIN, a short password) and a bare hash
// would let anyone holding the fingerprint guess them offline. The same
// secret fingerprints the same within a tenant and differently across
// tenants. The canonical form is encoding/json's, which sorts map keys at
// every depth.
//
// It returns "" if dataKey is not a 32-byte data key (an unkeyed fingerprint
// would be exactly the guessable hash this avoids), or if the secret cannot be
// encoded as JSON (NaN, channels), which a secret decoded from JSON never is.
func Fingerprint(dataKey []byte, secret map[string]any) string {
	if len(dataKey) != keySize {
		return ""
	}
	canonical, err := json.Marshal(secret)
	if err != nil {
		return ""
	}
	// A derived subkey keeps the data key itself used by AES-GCM alone.
	macKey, err := hkdf.Key(sha256.New, dataKey, nil, "sluice:v1:fingerprint", keySize)
	if err != nil {
		return ""
	}
	mac := hmac.New(sha256.New, macKey)
	mac.Write(canonical)
	return "sha256:" + hex.EncodeToString(mac.Sum(nil))[:12]
}
