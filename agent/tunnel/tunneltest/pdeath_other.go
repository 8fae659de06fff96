//go:build unix && !linux

package tunneltest

import "syscall"

// dieWithParent has no Linux parent-death signal to use elsewhere (and the
// empty network namespace it serves is Linux-only anyway).
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
