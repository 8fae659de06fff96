//go:build unix && testhooks

package supervisor

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// In a binary built with -tags testhooks (the watchdog boot test's), SIGUSR2
// wedges the supervisor's main loop for good: its next turn never ends, so
// Alive turns false and systemd's watchdog restarts the agent. A production
// build has no such hook (wedge.go).
var wedged atomic.Bool

func init() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	go func() {
		<-c
		wedged.Store(true)
	}()
}

func wedgeHook() {
	if wedged.Load() {
		select {}
	}
}
