package secrets_test

import (
	"encoding/base64"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/secrets"
)

func TestRedactor(t *testing.T) {
	const token = "sk-live+abc/def?x=1&y"
	r := secrets.NewRedactor(token, "abc", "")
	tests := map[string]string{
		"plain":          "Authorization: Bearer " + token,
		"base64":         "blob=" + base64.StdEncoding.EncodeToString([]byte(token)),
		"base64 raw url": "blob=" + base64.RawURLEncoding.EncodeToString([]byte(token)),
		"query escaped":  "GET /x?key=" + url.QueryEscape(token),
		"path escaped":   "GET /keys/" + url.PathEscape(token),
		"json escaped":   `{"err":"` + strings.ReplaceAll(token, "&", `\u0026`) + `"}`,
		"twice":          token + " and " + token,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			out := r.String(in)
			if !strings.Contains(out, secrets.Redacted) {
				t.Fatalf("String(%q) = %q, nothing redacted", in, out)
			}
			for _, leak := range []string{"sk-live", "def", base64.StdEncoding.EncodeToString([]byte(token))[:8]} {
				if strings.Contains(out, leak) {
					t.Fatalf("String(%q) = %q still contains %q", in, out, leak)
				}
			}
			if got := string(r.Bytes([]byte(in))); got != out {
				t.Fatalf("Bytes = %q, String = %q", got, out)
			}
		})
	}
	// Values shorter than 4 bytes are not scrubbed: "abc" appears in ordinary text.
	if got := r.String("abcdef"); got != "abcdef" {
		t.Fatalf("short value redacted: %q", got)
	}
	var none *secrets.Redactor
	if got := none.String("x"); got != "x" {
		t.Fatalf("nil Redactor changed text: %q", got)
	}
	if got := secrets.NewRedactor().String("unchanged"); got != "unchanged" {
		t.Fatalf("empty Redactor changed text: %q", got)
	}
}

func TestRedactorPrefersLongestMatch(t *testing.T) {
	r := secrets.NewRedactor("pass", "password123")
	if got := r.String("pw=password123."); got != "pw="+secrets.Redacted+"." {
		t.Fatalf("String = %q, want the whole value redacted once", got)
	}
}

func TestSecretStrings(t *testing.T) {
	secret := map[string]any{
		"apiKey": "key-1",
		"oauth":  map[string]any{"clientSecret": "cs-2", "scopes": []any{"read", "key-1"}},
		"port":   5432,
		"tls":    true,
		"none":   nil,
	}
	want := []string{"cs-2", "key-1", "read"}
	if got := secrets.SecretStrings(secret); !reflect.DeepEqual(got, want) {
		t.Fatalf("SecretStrings = %q, want %q", got, want)
	}
	r := secrets.NewRedactor(secrets.SecretStrings(secret)...)
	if got, want := r.String("used key-1 and cs-2"), "used [REDACTED] and [REDACTED]"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
}
