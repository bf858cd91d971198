// Package idempotency derives the Idempotency-Key a step's calls carry: one
// key per (run, step), the same across the step's retries, takeovers and
// resumes, so a receiver deduplicates what a crash or a retry sends again.
package idempotency

import (
	"crypto/sha256"
	"encoding/hex"
)

// Header is the request header the key travels in.
const Header = "Idempotency-Key"

// Key is the key of step stepID's calls in run runID: "sluice-" and the
// first 16 bytes of SHA-256("<runID>/<stepID>") in hex. Receivers
// deduplicate on it, so the format is a wire value: never change it, or a
// call resent after an upgrade would look new.
func Key(runID, stepID string) string {
	sum := sha256.Sum256([]byte(runID + "/" + stepID))
	return "sluice-" + hex.EncodeToString(sum[:16])
}
