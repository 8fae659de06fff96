package daemon

import (
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Boot steps recorded in the timeline sent with heartbeats.
const (
	StepAgentStarted  = "agent_started"
	StepSecretsLoaded = "secrets_loaded"
	StepRegistered    = "registered"
	StepUnitsReady    = "units_ready"
)

// MarkBoot records a boot step once; later calls for the same step are ignored.
func (d *Daemon) MarkBoot(step string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.boot {
		if s.Step == step {
			return
		}
	}
	d.boot = append(d.boot, api.BootStep{Step: step, At: time.Now().UTC()})
}

// Heartbeat is the host's state as the control plane receives it. It holds
// identifiers, states and counters only, never a secret.
func (d *Daemon) Heartbeat(bootID string, appliedRevision int64) api.HeartbeatRequest {
	units := d.sup.Status()
	hb := api.HeartbeatRequest{AgentVersion: d.version, BootID: bootID, AppliedRevision: appliedRevision}
	allReady := len(units) > 0
	for _, u := range units {
		us := api.UnitStatus{Name: u.Name, State: string(u.State), Restarts: u.Restarts,
			Detail: u.Detail, Since: u.Since.UTC()}
		if u.LastError != "" && !u.Ready {
			us.Detail = strings.TrimSpace(us.Detail + " " + u.LastError)
		}
		if c := u.Container; c != nil {
			us.Image, us.ImageDigest = c.Image, c.Digest
			if up := c.Update; up != nil {
				hb.Updates = append(hb.Updates, api.UpdateStatus{Unit: u.Name, Digest: up.To, Phase: up.Phase, Detail: up.Reason})
			}
		}
		if t := u.Tunnel; t != nil && t.ID != "" {
			hb.Tunnel = &api.TunnelStatus{ID: t.ID, ReadyConnections: t.ReadyConnections}
		}
		hb.Units = append(hb.Units, us)
		allReady = allReady && u.Ready
	}
	if allReady {
		d.MarkBoot(StepUnitsReady)
	}
	d.mu.Lock()
	hb.Boot = append([]api.BootStep(nil), d.boot...)
	if d.notice != nil {
		hb.Interruption = d.notice.String()
	}
	d.mu.Unlock()
	return hb
}
