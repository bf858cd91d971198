package secrets_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluicehq/sluice/internal/secrets"
)

func dataKey(t *testing.T, tenant string) []byte {
	t.Helper()
	k := mustRing(t, "k1:"+key(1), "k1")
	wrapped, id, err := k.NewDataKey(tenant)
	if err != nil {
		t.Fatal(err)
	}
	dk, err := k.UnwrapDataKey(tenant, id, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}

func TestSealOpen(t *testing.T) {
	dk := dataKey(t, "tenant-a")
	aad := secrets.AAD{TenantID: "tenant-a", CredentialID: "crm", Version: 3}
	plaintext := []byte(`{"token":"s3cr3t-value"}`)

	sealed, err := secrets.Seal(dk, aad, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 12+len(plaintext)+16 {
		t.Fatalf("sealed is %d bytes, want nonce+ciphertext+tag = %d", len(sealed), 12+len(plaintext)+16)
	}
	if bytes.Contains(sealed, []byte("s3cr3t")) {
		t.Fatal("sealed output contains the plaintext")
	}
	again, err := secrets.Seal(dk, aad, plaintext)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed[:12], again[:12]) {
		t.Fatal("two seals used the same nonce")
	}
	got, err := secrets.Open(dk, aad, sealed)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plaintext) {
		t.Fatalf("Open = %q, want %q", got, plaintext)
	}

	tampered := bytes.Clone(sealed)
	tampered[14] ^= 0x80
	otherKey := dataKey(t, "tenant-a")
	fails := map[string]struct {
		key        []byte
		aad        secrets.AAD
		ciphertext []byte
	}{
		"wrong tenant":     {dk, secrets.AAD{TenantID: "tenant-b", CredentialID: "crm", Version: 3}, sealed},
		"wrong credential": {dk, secrets.AAD{TenantID: "tenant-a", CredentialID: "erp", Version: 3}, sealed},
		"wrong version":    {dk, secrets.AAD{TenantID: "tenant-a", CredentialID: "crm", Version: 2}, sealed},
		"wrong data key":   {otherKey, aad, sealed},
		"tampered":         {dk, aad, tampered},
		"truncated":        {dk, aad, sealed[:11]},
		"empty":            {dk, aad, nil},
	}
	for name, f := range fails {
		t.Run(name, func(t *testing.T) {
			out, err := secrets.Open(f.key, f.aad, f.ciphertext)
			if !errors.Is(err, secrets.ErrDecrypt) {
				t.Fatalf("err = %v, want ErrDecrypt", err)
			}
			if out != nil {
				t.Fatal("returned plaintext alongside the error")
			}
		})
	}
}

func TestSealBadInput(t *testing.T) {
	dk := dataKey(t, "t")
	good := secrets.AAD{TenantID: "t", CredentialID: "c", Version: 1}
	tests := map[string]struct {
		key  []byte
		aad  secrets.AAD
		want error
	}{
		"short key":        {dk[:16], good, secrets.ErrInvalidDataKey},
		"nil key":          {nil, good, secrets.ErrInvalidDataKey},
		"empty tenant":     {dk, secrets.AAD{CredentialID: "c", Version: 1}, secrets.ErrInvalidAAD},
		"colon in tenant":  {dk, secrets.AAD{TenantID: "a:b", CredentialID: "c", Version: 1}, secrets.ErrInvalidAAD},
		"empty credential": {dk, secrets.AAD{TenantID: "t", Version: 1}, secrets.ErrInvalidAAD},
		"negative version": {dk, secrets.AAD{TenantID: "t", CredentialID: "c", Version: -1}, secrets.ErrInvalidAAD},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := secrets.Seal(tt.key, tt.aad, []byte("{}")); !errors.Is(err, tt.want) {
				t.Fatalf("Seal: err = %v, want %v", err, tt.want)
			}
			if _, err := secrets.Open(tt.key, tt.aad, make([]byte, 64)); !errors.Is(err, tt.want) {
				t.Fatalf("Open: err = %v, want %v", err, tt.want)
			}
		})
	}
}
