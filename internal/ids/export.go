package ids

// Prefix of data exports (internal/export). Part of the public API like the
// others: never rename it.
const Export = "exp"
