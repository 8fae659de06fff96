//go:build unix

package supervisor

import "syscall"

// groupAttr starts a unit in its own process group, killed if the agent dies.
func groupAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
