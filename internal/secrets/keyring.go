package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
)

// A KeyRing holds the master keys that wrap per-tenant data keys. New data
// keys are always wrapped by the active key; older keys stay in the ring so
// blobs wrapped before a rotation still open until they are rewrapped.
type KeyRing struct {
	activeID string
	aeads    map[string]cipher.AEAD
	dev      bool
}

// devKey is public by construction: derived from a sentence anyone can read,
// so nobody mistakes it for protection.
var devKey = sha256.Sum256([]byte("sluice development master key: NOT SECRET, never use in production"))

const devKeyID = "dev"

// maxKeyIDLen bounds ids because they are stored next to every wrapped key.
const maxKeyIDLen = 64

// ParseKeyRing parses SLUICE_MASTER_KEYS ("id:base64key,id2:base64key", each
// key 32 bytes in standard base64) and selects activeID (SLUICE_MASTER_KEY_ID)
// as the key that wraps new data keys.
func ParseKeyRing(spec, activeID string) (*KeyRing, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, fmt.Errorf("%w: no master keys configured", ErrInvalidKeyRing)
	}
	keys := map[string][]byte{}
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			return nil, fmt.Errorf("%w: entry %d is empty", ErrInvalidKeyRing, i+1)
		}
		id, encoded, ok := strings.Cut(entry, ":")
		if !ok {
			return nil, fmt.Errorf("%w: entry %d is not id:base64key", ErrInvalidKeyRing, i+1)
		}
		if err := checkKeyID(id); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrInvalidKeyRing, i+1, err)
		}
		if _, dup := keys[id]; dup {
			return nil, fmt.Errorf("%w: duplicate key id %q", ErrInvalidKeyRing, id)
		}
		// The decode error is dropped on purpose: it quotes the offending
		// input, which is key material.
		key, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q is not valid standard base64", ErrInvalidKeyRing, id)
		}
		if len(key) != keySize {
			return nil, fmt.Errorf("%w: key %q is %d bytes, want %d", ErrInvalidKeyRing, id, len(key), keySize)
		}
		keys[id] = key
	}
	if activeID == "" {
		return nil, fmt.Errorf("%w: active key id is empty", ErrInvalidKeyRing)
	}
	if _, ok := keys[activeID]; !ok {
		return nil, fmt.Errorf("%w: active key id %q is not in the ring", ErrInvalidKeyRing, activeID)
	}
	return newKeyRing(keys, activeID)
}

func checkKeyID(id string) error {
	if id == "" {
		return fmt.Errorf("key id is empty")
	}
	if len(id) > maxKeyIDLen {
		return fmt.Errorf("key id is longer than %d characters", maxKeyIDLen)
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("key id %q may only contain letters, digits, '-', '_' and '.'", id)
		}
	}
	return nil
}

func newKeyRing(keys map[string][]byte, activeID string) (*KeyRing, error) {
	k := &KeyRing{activeID: activeID, aeads: make(map[string]cipher.AEAD, len(keys))}
	for id, key := range keys {
		aead, err := newAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("%w: key %q: %v", ErrInvalidKeyRing, id, err)
		}
		k.aeads[id] = aead
		// Compared by value, not id, so the dev key pasted into production
		// config under another name is still caught.
		if subtle.ConstantTimeCompare(key, devKey[:]) == 1 {
			k.dev = true
		}
	}
	return k, nil
}

// DevKeyRing returns the development key ring: one public key with id "dev".
// It exists so `sluice dev` runs without configuration; production startup
// must refuse any ring for which IsDev reports true.
func DevKeyRing() *KeyRing {
	k, err := newKeyRing(map[string][]byte{devKeyID: devKey[:]}, devKeyID)
	if err != nil {
		panic(err) // a fixed 32-byte key cannot fail
	}
	return k
}

// IsDev reports whether the ring contains the public development key, under
// any id.
func (k *KeyRing) IsDev() bool { return k.dev }

// ActiveID returns the id of the master key that wraps new data keys.
func (k *KeyRing) ActiveID() string { return k.activeID }

// NewDataKey makes a random per-tenant data key and returns it wrapped by the
// active master key, bound to tenantID so a wrapped key copied to another
// tenant's row does not open.
func (k *KeyRing) NewDataKey(tenantID string) (wrapped []byte, masterKeyID string, err error) {
	if tenantID == "" {
		return nil, "", fmt.Errorf("%w: empty tenant id", ErrInvalidAAD)
	}
	dataKey := make([]byte, keySize)
	rand.Read(dataKey) // never returns an error; crashes the program instead
	defer clear(dataKey)
	return k.wrap(tenantID, dataKey), k.activeID, nil
}

// UnwrapDataKey opens a data key wrapped by the master key masterKeyID for
// tenantID.
func (k *KeyRing) UnwrapDataKey(tenantID, masterKeyID string, wrapped []byte) ([]byte, error) {
	if tenantID == "" {
		return nil, fmt.Errorf("%w: empty tenant id", ErrInvalidAAD)
	}
	aead, ok := k.aeads[masterKeyID]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownMasterKey, masterKeyID)
	}
	dataKey, err := aead.Open(nil, nil, wrapped, wrapAAD(tenantID))
	if err != nil || len(dataKey) != keySize {
		return nil, ErrDecrypt
	}
	return dataKey, nil
}

// RewrapDataKey re-wraps a data key under the active master key, for master
// key rotation. The data key itself is unchanged, so secrets sealed under it
// need no re-encryption.
func (k *KeyRing) RewrapDataKey(tenantID, masterKeyID string, wrapped []byte) ([]byte, string, error) {
	dataKey, err := k.UnwrapDataKey(tenantID, masterKeyID, wrapped)
	if err != nil {
		return nil, "", err
	}
	defer clear(dataKey)
	return k.wrap(tenantID, dataKey), k.activeID, nil
}

func (k *KeyRing) wrap(tenantID string, dataKey []byte) []byte {
	return k.aeads[k.activeID].Seal(nil, nil, dataKey, wrapAAD(tenantID))
}

// wrapAAD differs from the secret AAD's shape so a wrapped data key and a
// sealed secret can never stand in for each other.
func wrapAAD(tenantID string) []byte {
	return []byte("sluice:v1:datakey:" + tenantID)
}

// newAEAD uses GCM with random nonces prepended to the output, so callers
// cannot reuse a nonce by mistake.
func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}
