package daemon

import (
	"strconv"
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
		if img := u.Info["image"]; img != "" {
			us.Image = img
			if _, dg, ok := strings.Cut(img, "@"); ok {
				us.ImageDigest = dg
			}
		}
		if id := u.Info["tunnel_id"]; id != "" {
			n, _ := strconv.Atoi(u.Info["ready_connections"])
			hb.Tunnel = &api.TunnelStatus{ID: id, ReadyConnections: n}
		}
		if ph := u.Info["update_phase"]; ph != "" {
			hb.Updates = append(hb.Updates, api.UpdateStatus{Unit: u.Name, Digest: u.Info["update_to"],
				Phase: ph, Detail: u.Info["update_reason"]})
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
