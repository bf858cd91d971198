package secrets_test

import (
	"regexp"
	"testing"

	"github.com/sluicehq/sluice/internal/secrets"
)

func TestFingerprint(t *testing.T) {
	dkA, dkB := dataKey(t, "a"), dataKey(t, "b")
	secret := map[string]any{"user": "bot", "password": "hunter22", "scopes": []any{"read", "write"}, "nested": map[string]any{"z": 1.5, "a": true}}
	// Same content built in a different order: map order must not matter.
	same := map[string]any{"nested": map[string]any{"a": true, "z": 1.5}, "scopes": []any{"read", "write"}, "password": "hunter22", "user": "bot"}

	fp := secrets.Fingerprint(dkA, secret)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{12}$`).MatchString(fp) {
		t.Fatalf("Fingerprint = %q, want sha256: and 12 hex chars", fp)
	}
	for range 5 {
		if got := secrets.Fingerprint(dkA, same); got != fp {
			t.Fatalf("equal secret fingerprints %q, want %q", got, fp)
		}
	}
	if secrets.Fingerprint(dkB, secret) == fp {
		t.Fatal("fingerprint is the same under another tenant's data key")
	}
	changed := map[string]any{"user": "bot", "password": "hunter23", "scopes": []any{"read", "write"}, "nested": map[string]any{"z": 1.5, "a": true}}
	if secrets.Fingerprint(dkA, changed) == fp {
		t.Fatal("fingerprint did not change with the secret")
	}
	if got := secrets.Fingerprint(nil, secret); got != "" {
		t.Fatalf("Fingerprint without a data key = %q, want \"\"", got)
	}
}
