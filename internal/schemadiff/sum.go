package schemadiff

import (
	"fmt"

	"ariga.io/atlas/sql/migrate"
	"ariga.io/atlas/sql/sqltool"
)

// RewriteSum recomputes atlas.sum in dir after a hand-written migration was
// added or edited; the next diff refuses to run on a stale sum.
func RewriteSum(dir string) error {
	d, err := sqltool.NewGooseDir(dir)
	if err != nil {
		return err
	}
	sum, err := d.Checksum()
	if err != nil {
		return fmt.Errorf("checksum: %w", err)
	}
	return migrate.WriteSumFile(d, sum)
}
