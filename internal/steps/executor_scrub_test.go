package steps

import (
	"strings"
	"testing"
)

func TestScrubFields(t *testing.T) {
	x := NewExecutor(nil).WithSensitiveFields([]string{"DateOfBirth"})
	got := x.recordBody([]byte(`{"user":{"name":"ada","password":"hunter2","dateofbirth":"1815-12-10"},"items":[{"apiKey":"k-1"}]}`), nil)
	for _, leaked := range []string{"hunter2", "1815-12-10", "k-1"} {
		if strings.Contains(got, leaked) {
			t.Fatalf("recorded body keeps %q: %s", leaked, got)
		}
	}
	if !strings.Contains(got, `"name":"ada"`) || strings.Count(got, "[REDACTED]") != 3 {
		t.Fatalf("recorded body: %s", got)
	}
	if got := x.recordBody([]byte("password=plain-text"), nil); got != "password=plain-text" {
		t.Fatalf("non-JSON body changed: %s", got)
	}
}
