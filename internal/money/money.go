// Package money handles amounts in integer micro-USD (1 USD = 1,000,000),
// the only unit Sluice stores, and their decimal display.
package money

import (
	"fmt"
	"math"
)

// MicroPerUSD is the number of micro-USD in one USD.
const MicroPerUSD = 1_000_000

// FormatUSD renders micro-USD as a decimal string with six places ("1.250000").
func FormatUSD(micro int64) string {
	sign := ""
	if micro < 0 {
		sign = "-"
		micro = -micro
	}
	return fmt.Sprintf("%s%d.%06d", sign, micro/MicroPerUSD, micro%MicroPerUSD)
}

// FromUSD converts a USD amount to micro-USD, rounding to the nearest unit.
func FromUSD(usd float64) int64 {
	return int64(math.Round(usd * MicroPerUSD))
}
