// Package export owns data exports: createExport (validation, admins only,
// audited), the driver in the workers that writes an export's gzipped NDJSON
// files and its manifest (one export at a time per export across workers,
// under a Postgres advisory lock; a worker that dies mid-export leaves the
// export RUNNING with its lock released, and the next pass writes it again
// from the start), the object store the files go to (local disk or an
// S3-compatible store, behind Store), signed expiring download URLs and the
// handler that serves them (GET /exports/{id}/{file}), and the purge of
// expired exports (a singleton job). Everything it reads, it reads in tenant
// transactions under RLS, a page at a time by keyset, so memory stays
// bounded whatever the export's size.
package export
