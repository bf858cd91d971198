package bench

import (
	"os/exec"
	"syscall"
)

// orphanProof makes the kernel send SIGTERM to the child if the benchmark
// dies without stopping it (a panic, SIGKILL), so no server or worker is
// left running against a dropped database.
func orphanProof(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
