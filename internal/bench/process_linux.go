package bench

import (
	"os"
	"os/exec"
	"syscall"
)

// orphanProof makes the kernel send SIGTERM to the child if the benchmark
// dies without stopping it (a panic, SIGKILL), so no server or worker is
// left running against a dropped database.
func orphanProof(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// exitedPeakRSS is the peak resident set size in bytes of a process that has
// exited (its rusage; Linux reports ru_maxrss in KiB).
func exitedPeakRSS(ps *os.ProcessState) (int64, bool) {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru.Maxrss > 0 {
		return ru.Maxrss << 10, true
	}
	return 0, false
}
