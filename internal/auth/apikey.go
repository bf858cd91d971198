package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/sluicehq/sluice/internal/ids"
)

// APIKeyPrefix starts every API key token, so leaked keys are recognisable
// by secret scanners. A token is "slk_<tenant ulid>_<64 hex chars>": the
// tenant part lets authentication open the tenant's transaction before it
// looks the key up under RLS.
const APIKeyPrefix = "slk_"

// NewAPIKeyToken makes a token for tenantID and returns it with its hash.
func NewAPIKeyToken(tenantID string) (token, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	token = APIKeyPrefix + strings.TrimPrefix(tenantID, ids.Tenant+"_") + "_" + hex.EncodeToString(b[:])
	return token, HashAPIKey(token)
}

// HashAPIKey is the stored form of a token. Tokens carry 256 random bits, so
// a fast hash is enough.
func HashAPIKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// tenantOfAPIKey returns the tenant id a token names, or "".
func tenantOfAPIKey(token string) string {
	rest, ok := strings.CutPrefix(token, APIKeyPrefix)
	if !ok {
		return ""
	}
	i := strings.IndexByte(rest, '_')
	if i <= 0 {
		return ""
	}
	tid := ids.Tenant + "_" + rest[:i]
	if !ids.Valid(tid, ids.Tenant) {
		return ""
	}
	return tid
}
