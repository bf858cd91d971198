//go:build !linux

package bench

import (
	"os"
	"os/exec"
)

// orphanProof does nothing where the kernel cannot signal a child when its
// parent dies; stop children explicitly.
func orphanProof(*exec.Cmd) {}

// exitedPeakRSS is not known here.
func exitedPeakRSS(*os.ProcessState) (int64, bool) { return 0, false }
