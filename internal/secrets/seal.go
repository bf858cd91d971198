package secrets

import (
	"crypto/cipher"
	"fmt"
	"strconv"
	"strings"
)

// AAD names the one place a sealed secret belongs. It is authenticated, not
// encrypted: a ciphertext moved to another tenant, credential or version
// fails to open instead of decrypting under the wrong identity.
type AAD struct {
	TenantID     string
	CredentialID string
	Version      int
}

// bytes renders "sluice:v1:<tenant>:<credential>:<version>". A tenant id
// containing ':' is refused because it would let two different AADs render
// the same string; the version, read from the right, cannot contain one.
func (a AAD) bytes() ([]byte, error) {
	switch {
	case a.TenantID == "":
		return nil, fmt.Errorf("%w: empty tenant id", ErrInvalidAAD)
	case strings.Contains(a.TenantID, ":"):
		return nil, fmt.Errorf("%w: tenant id contains ':'", ErrInvalidAAD)
	case a.CredentialID == "":
		return nil, fmt.Errorf("%w: empty credential id", ErrInvalidAAD)
	case a.Version < 0:
		return nil, fmt.Errorf("%w: negative version", ErrInvalidAAD)
	}
	return []byte("sluice:v1:" + a.TenantID + ":" + a.CredentialID + ":" + strconv.Itoa(a.Version)), nil
}

// Seal encrypts a secret (JSON bytes) under a tenant data key with
// AES-256-GCM. The output is a random 12-byte nonce followed by the
// ciphertext and tag.
func Seal(dataKey []byte, aad AAD, plaintext []byte) ([]byte, error) {
	ad, err := aad.bytes()
	if err != nil {
		return nil, err
	}
	aead, err := dataKeyAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	return aead.Seal(nil, nil, plaintext, ad), nil
}

// Open decrypts what Seal produced; aad must be exactly the one it was sealed
// with.
func Open(dataKey []byte, aad AAD, ciphertext []byte) ([]byte, error) {
	ad, err := aad.bytes()
	if err != nil {
		return nil, err
	}
	aead, err := dataKeyAEAD(dataKey)
	if err != nil {
		return nil, err
	}
	plaintext, err := aead.Open(nil, nil, ciphertext, ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return plaintext, nil
}

func dataKeyAEAD(dataKey []byte) (cipher.AEAD, error) {
	if len(dataKey) != keySize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrInvalidDataKey, len(dataKey), keySize)
	}
	aead, err := newAEAD(dataKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDataKey, err)
	}
	return aead, nil
}
