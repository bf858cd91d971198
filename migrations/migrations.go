// Package migrations embeds Sluice's SQL migrations (goose format). Files
// named *_schema.sql are generated from ent/schema by `sluice migrate diff`;
// the others (RLS, triggers) are written by hand.
package migrations

import "embed"

// FS holds every migration file.
//
//go:embed *.sql
var FS embed.FS
