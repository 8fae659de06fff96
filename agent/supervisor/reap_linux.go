//go:build unix

package supervisor

import (
	"bytes"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Orphans of our units (a unit's grandchildren whose parent died) would
// become zombies under PID 1, which on minimal hosts and containers never
// reaps them. As a child subreaper the agent inherits them and reaps them
// itself, without stealing the exit status of the children os/exec waits for.

var (
	// reapMu is held across fork+track so a fresh child is never reaped as an orphan.
	reapMu  sync.Mutex
	tracked = map[int]bool{}
)

// BecomeSubreaper makes the calling process inherit its descendants' orphans.
func BecomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

func track(pid int) { tracked[pid] = true }

func untrack(pid int) {
	reapMu.Lock()
	delete(tracked, pid)
	reapMu.Unlock()
}

// procStat returns the state, parent and process group of pid.
func procStat(pid int) (state byte, ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, 0, 0, false
	}
	f := bytes.Fields(b[i+2:])
	if len(f) < 3 {
		return 0, 0, 0, false
	}
	ppid, _ = strconv.Atoi(string(f[1]))
	pgrp, _ = strconv.Atoi(string(f[2]))
	return f[0][0], ppid, pgrp, true
}

// reapOrphans waits for every untracked child of ours that has exited, and
// reports how many untracked children of group pgid (0: any) are still alive.
func reapOrphans(pgid int) (alive int) {
	self := os.Getpid()
	reapMu.Lock()
	defer reapMu.Unlock()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || tracked[pid] {
			continue
		}
		state, ppid, pgrp, ok := procStat(pid)
		if !ok || ppid != self {
			continue
		}
		if state == 'Z' {
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
			continue
		}
		if pgid == 0 || pgrp == pgid {
			alive++
		}
	}
	return alive
}

// ReapOrphans reaps inherited orphans that have exited; the daemon calls it
// periodically.
func ReapOrphans() { reapOrphans(-1) }
