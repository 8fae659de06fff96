//go:build unix

package tunneltest

import "syscall"

// dieWithParent kills the child when the test process dies.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
