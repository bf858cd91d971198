// Package secrets owns the credential vault's cryptography: the master key
// ring, per-tenant data keys wrapped by it, sealing secrets under a data key,
// display fingerprints, and scrubbing secret values out of text.
//
// Every error here is safe to log: messages name key ids and positions,
// never key bytes, ciphertext or plaintext.
package secrets

import "errors"

var (
	// ErrInvalidKeyRing reports a master key ring that cannot be used.
	ErrInvalidKeyRing = errors.New("secrets: invalid key ring")
	// ErrUnknownMasterKey reports a wrapped data key naming a master key id
	// the ring does not hold (for example one retired before its blobs were
	// rewrapped).
	ErrUnknownMasterKey = errors.New("secrets: unknown master key")
	// ErrInvalidDataKey reports a data key that is not 32 bytes.
	ErrInvalidDataKey = errors.New("secrets: invalid data key")
	// ErrInvalidAAD reports associated data that could not bind a secret to
	// exactly one tenant, credential and version.
	ErrInvalidAAD = errors.New("secrets: invalid associated data")
	// ErrDecrypt reports ciphertext that does not open: wrong key, wrong
	// tenant/credential/version, or tampering. The causes are deliberately
	// indistinguishable.
	ErrDecrypt = errors.New("secrets: decrypt failed")
)

// keySize is the size of master and data keys: AES-256.
const keySize = 32
