// Package exportspec holds the stored JSON shapes of exports (ent/schema imports
// it; it imports nothing of Sluice).
package exportspec

// File is one file of an export: a gzipped NDJSON file per included kind,
// and the manifest.
type File struct {
	Name   string `json:"name"`
	Kind   string `json:"kind"` // RUNS, EVENTS, STEPS, AUDIT, COST, MANIFEST
	Count  int64  `json:"count"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}
