//go:build unix

package daemon

import (
	"context"
	"slices"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// SecretsChanged restarts, one at a time and in dependency order, the units
// that use any of the changed secrets, and lets blocked units try again.
// Units using none of them are not touched.
func (d *Daemon) SecretsChanged(ctx context.Context, changed []string) {
	d.sup.Poke()
	var users []string
	for _, s := range changed {
		users = append(users, d.unitsUsing(s)...)
	}
	for _, name := range d.sup.Names() {
		if !slices.Contains(users, name) || !d.running(name) {
			continue
		}
		d.log.Info("restarting unit: a secret it uses changed", "unit", name)
		if err := d.sup.Restart(ctx, name, "secret changed"); err != nil {
			d.log.Warn("restart after secret change", "unit", name, "err", err)
			continue
		}
		d.waitSettled(ctx, name, 2*time.Minute)
	}
}

func (d *Daemon) running(name string) bool {
	for _, st := range d.sup.Status() {
		if st.Name == name {
			switch st.State {
			case supervisor.Starting, supervisor.Running, supervisor.Ready, supervisor.Backoff:
				return true
			}
		}
	}
	return false
}

// waitSettled waits until a restarted unit is ready or has clearly failed.
func (d *Daemon) waitSettled(ctx context.Context, name string, limit time.Duration) {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		ch := d.sup.Changed()
		for _, st := range d.sup.Status() {
			if st.Name == name && (st.Ready || st.State == supervisor.Failed || st.State == supervisor.Blocked) {
				return
			}
		}
		select {
		case <-ch:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
