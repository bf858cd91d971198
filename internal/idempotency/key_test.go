package idempotency_test

import (
	"testing"

	"github.com/sluicehq/sluice/internal/idempotency"
)

// The key is a wire value receivers already deduplicate on: this pins it
// for a fixed (run, step), so a change of format cannot pass unnoticed.
func TestKeyIsPinned(t *testing.T) {
	const want = "sluice-c5a269a6395aaf29517a7152842b6d49"
	if got := idempotency.Key("run_01m88yrexmjkc4pktn5qbs4bn6", "post"); got != want {
		t.Fatalf("Key = %q, want %q (the format runs in flight depend on)", got, want)
	}
}

func TestKeyDependsOnRunAndStep(t *testing.T) {
	k := idempotency.Key("run_1", "post")
	if k != idempotency.Key("run_1", "post") {
		t.Error("Key is not stable")
	}
	for _, other := range []string{idempotency.Key("run_2", "post"), idempotency.Key("run_1", "get"), idempotency.Key("run_1/post", ""), idempotency.Key("", "run_1/post")} {
		if other == k {
			t.Errorf("another (run, step) got the same key %q", k)
		}
	}
}
