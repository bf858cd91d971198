package money

import "testing"

func TestFormatUSD(t *testing.T) {
	for micro, want := range map[int64]string{0: "0.000000", 1: "0.000001", 1_250_000: "1.250000", -2_500_001: "-2.500001"} {
		if got := FormatUSD(micro); got != want {
			t.Errorf("FormatUSD(%d) = %q, want %q", micro, got, want)
		}
	}
	if got := FromUSD(2500); got != 2_500_000_000 {
		t.Errorf("FromUSD(2500) = %d", got)
	}
}
