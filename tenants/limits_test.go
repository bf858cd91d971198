package tenants

import (
	"strings"
	"testing"
)

// The manifest's limits block: valid names and limits parse; a bad name or
// a limit out of 1..10000 is refused at limits.<name>.
func TestManifestLimits(t *testing.T) {
	m, err := Parse([]byte("slug: acme-x\nname: Acme\nlimits:\n  crm-api: 5\n  openai.v1: 10000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Limits["crm-api"] != 5 || m.Limits["openai.v1"] != 10000 {
		t.Fatalf("limits %v", m.Limits)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"limits:\n  crm-api: 0\n", "limits.crm-api"},
		{"limits:\n  crm-api: 10001\n", "limits.crm-api"},
		{"limits:\n  CRM: 5\n", "limits.CRM"},
	} {
		_, err := Parse([]byte("slug: acme-x\nname: Acme\n" + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.yaml, err, tc.want)
		}
	}
}
