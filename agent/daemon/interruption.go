//go:build unix

package daemon

import (
	"context"
	"log/slog"

	"github.com/molecule-ai/molecule-agent/agent/identity"
)

// interruptionWatch stops every unit gracefully, in reverse dependency
// order, when IMDS announces a spot interruption or an Auto Scaling
// termination. The agent stays up to report it.
func (d *Daemon) interruptionWatch(h *host, log *slog.Logger) Background {
	return func(ctx context.Context) {
		n, err := h.imds.Watch(ctx, 0)
		if err != nil {
			return // ctx ended
		}
		log.Warn("instance interruption: stopping units", "notice", n.String())
		d.mu.Lock()
		d.notice = &n
		d.mu.Unlock()
		d.SetPhase("interrupted")
		d.AddSection("interruption", func() any { return n })
		d.stopUnits()
		log.Info("units stopped for the interruption", "notice", n.String())
	}
}

// Notice returns the interruption notice, if one arrived.
func (d *Daemon) Notice() *identity.Notice {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.notice
}
