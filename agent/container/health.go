//go:build unix

package container

import (
	"context"
	"fmt"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// HealthProber returns a supervisor.Prober that is ready when the unit's
// current container runs and, if it has a healthcheck (its spec's or its
// image's), Docker reports it healthy.
//
// Prefer it, or an HTTP probe, over a TCP probe on a published port:
// Docker's userland proxy accepts connections on the host port as soon as
// the container starts, before the service inside listens.
func (d *Driver) HealthProber() supervisor.Prober { return healthProber{d} }

type healthProber struct{ d *Driver }

// Ready implements supervisor.Prober.
func (p healthProber) Ready(ctx context.Context) (bool, string, error) {
	p.d.mu.Lock()
	id := p.d.cur
	p.d.mu.Unlock()
	if id == "" {
		return false, "no container yet", nil
	}
	c, err := p.d.opts.Client.inspectContainer(ctx, id)
	if err != nil {
		return false, "inspect failed", fmt.Errorf("inspect container %s: %w", short(id), err)
	}
	if c.State == nil || !c.State.Running {
		return false, "container not running", nil
	}
	h := c.State.Health
	if h == nil {
		return true, "running (no healthcheck)", nil
	}
	// Only the status and exit code: health output is the container's and
	// may hold anything.
	detail := "health " + h.Status
	if n := len(h.Log); n > 0 {
		detail += fmt.Sprintf(" (last check exit %d)", h.Log[n-1].ExitCode)
	}
	return h.Status == "healthy", detail, nil
}

// setCurrent records the container the unit runs now, for HealthProber.
func (d *Driver) setCurrent(id string) {
	d.mu.Lock()
	d.cur = id
	d.mu.Unlock()
}
