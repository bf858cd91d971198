package secrets_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/secrets"
)

func key(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

func mustRing(t *testing.T, spec, active string) *secrets.KeyRing {
	t.Helper()
	k, err := secrets.ParseKeyRing(spec, active)
	if err != nil {
		t.Fatalf("ParseKeyRing: %v", err)
	}
	return k
}

func TestDataKeyRoundTrip(t *testing.T) {
	k := mustRing(t, "k1:"+key(1)+", k2:"+key(2), "k2")
	if k.ActiveID() != "k2" {
		t.Fatalf("ActiveID = %q, want k2", k.ActiveID())
	}
	wrapped, id, err := k.NewDataKey("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	if id != "k2" {
		t.Fatalf("wrapped under %q, want active k2", id)
	}
	dk, err := k.UnwrapDataKey("tenant-a", id, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	if len(dk) != 32 {
		t.Fatalf("data key is %d bytes, want 32", len(dk))
	}
	if _, err := k.UnwrapDataKey("tenant-b", id, wrapped); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("unwrap for another tenant: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.UnwrapDataKey("tenant-a", "k1", wrapped); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("unwrap with the wrong master key: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.UnwrapDataKey("tenant-a", "gone", wrapped); !errors.Is(err, secrets.ErrUnknownMasterKey) {
		t.Fatalf("unwrap with an unknown master key: err = %v, want ErrUnknownMasterKey", err)
	}
	tampered := bytes.Clone(wrapped)
	tampered[len(tampered)-1] ^= 1
	if _, err := k.UnwrapDataKey("tenant-a", id, tampered); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("unwrap tampered: err = %v, want ErrDecrypt", err)
	}
	if _, _, err := k.NewDataKey(""); !errors.Is(err, secrets.ErrInvalidAAD) {
		t.Fatalf("NewDataKey(\"\"): err = %v, want ErrInvalidAAD", err)
	}
}

func TestRewrapAfterRotation(t *testing.T) {
	old := mustRing(t, "k1:"+key(1), "k1")
	wrappedOld, oldID, err := old.NewDataKey("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	want, err := old.UnwrapDataKey("tenant-a", oldID, wrappedOld)
	if err != nil {
		t.Fatal(err)
	}

	rotated := mustRing(t, "k1:"+key(1)+",k2:"+key(2), "k2")
	// Blobs not yet rewrapped must keep opening under the old id.
	if got, err := rotated.UnwrapDataKey("tenant-a", oldID, wrappedOld); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("old blob after rotation: err = %v, same key = %v", err, bytes.Equal(got, want))
	}
	wrappedNew, newID, err := rotated.RewrapDataKey("tenant-a", oldID, wrappedOld)
	if err != nil {
		t.Fatal(err)
	}
	if newID != "k2" {
		t.Fatalf("rewrapped under %q, want k2", newID)
	}
	got, err := rotated.UnwrapDataKey("tenant-a", newID, wrappedNew)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("rewrap changed the data key")
	}
	if _, _, err := rotated.RewrapDataKey("tenant-b", oldID, wrappedOld); !errors.Is(err, secrets.ErrDecrypt) {
		t.Fatalf("rewrap for another tenant: err = %v, want ErrDecrypt", err)
	}

	retired := mustRing(t, "k2:"+key(2), "k2")
	if _, err := retired.UnwrapDataKey("tenant-a", newID, wrappedNew); err != nil {
		t.Fatalf("rewrapped blob after retiring k1: %v", err)
	}
}

func TestParseKeyRingErrors(t *testing.T) {
	short := base64.StdEncoding.EncodeToString([]byte("only sixteen byt"))
	notB64 := "this-is-not*base64!!secretish"
	tests := []struct {
		name, spec, active, want string
	}{
		{"empty", "", "k1", "no master keys"},
		{"blank", "  ", "k1", "no master keys"},
		{"empty entry", "k1:" + key(1) + ",", "k1", "entry 2 is empty"},
		{"no colon", key(1), "k1", "entry 1 is not id:base64key"},
		{"empty id", ":" + key(1), "k1", "key id is empty"},
		{"bad id", "k 1:" + key(1), "k 1", "may only contain"},
		{"bad base64", "k1:" + notB64, "k1", `key "k1" is not valid standard base64`},
		{"wrong length", "k1:" + short, "k1", `key "k1" is 16 bytes, want 32`},
		{"duplicate", "k1:" + key(1) + ",k1:" + key(2), "k1", `duplicate key id "k1"`},
		{"no active", "k1:" + key(1), "", "active key id is empty"},
		{"active missing", "k1:" + key(1), "k2", `active key id "k2" is not in the ring`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := secrets.ParseKeyRing(tt.spec, tt.active)
			if !errors.Is(err, secrets.ErrInvalidKeyRing) {
				t.Fatalf("err = %v, want ErrInvalidKeyRing", err)
			}
			if k != nil {
				t.Fatal("returned a ring alongside the error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.want)
			}
			for _, material := range []string{key(1), key(2), short, notB64} {
				if strings.Contains(err.Error(), material) {
					t.Fatalf("error %q leaks key material", err)
				}
			}
		})
	}
}

func TestDevKeyRing(t *testing.T) {
	dev := secrets.DevKeyRing()
	if !dev.IsDev() || dev.ActiveID() != "dev" {
		t.Fatalf("DevKeyRing: IsDev = %v, ActiveID = %q", dev.IsDev(), dev.ActiveID())
	}
	wrapped, id, err := dev.NewDataKey("t")
	if err != nil {
		t.Fatal(err)
	}
	// Two calls must agree: dev data keys outlive a process restart.
	if _, err := secrets.DevKeyRing().UnwrapDataKey("t", id, wrapped); err != nil {
		t.Fatalf("second DevKeyRing cannot unwrap: %v", err)
	}
	if mustRing(t, "k1:"+key(1), "k1").IsDev() {
		t.Fatal("a configured ring reports IsDev")
	}
}

func TestIsDevCatchesRenamedDevKey(t *testing.T) {
	// The derivation is repeated here on purpose: changing the dev key
	// orphans every developer's local vault, so it should take two edits.
	sum := sha256.Sum256([]byte("sluice development master key: NOT SECRET, never use in production"))
	devKey := base64.StdEncoding.EncodeToString(sum[:])
	k := mustRing(t, "prod:"+devKey+",k1:"+key(1), "k1")
	if !k.IsDev() {
		t.Fatal("ring containing the dev key under another id does not report IsDev")
	}
	wrapped, _, err := secrets.DevKeyRing().NewDataKey("t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.UnwrapDataKey("t", "prod", wrapped); err != nil {
		t.Fatalf("derivation drifted from DevKeyRing: %v", err)
	}
}
