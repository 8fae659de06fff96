//go:build unix && !linux

package supervisor

import (
	"errors"
	"sync"
	"syscall"
)

// The agent runs on Linux: it becomes its units' child subreaper and ties
// their lives to its own, which only Linux offers. Elsewhere (a developer's
// macOS) the package builds so the tree compiles and its pure parts test;
// units run in their own process group, and orphans go to PID 1.

func groupAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

var reapMu sync.Mutex

// BecomeSubreaper is not available off Linux.
func BecomeSubreaper() error { return errors.New("child subreaper needs Linux") }

func track(int)                   {}
func untrack(int)                 {}
func reapOrphans(int) (alive int) { return 0 }

// ReapOrphans does nothing off Linux.
func ReapOrphans() {}
