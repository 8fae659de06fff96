//go:build unix

package daemon

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/heartbeat"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Boot phases, in the order they run. The boot timeline sent with
// heartbeats is exactly these phases, each with its end and duration.
const (
	PhaseParams       = "params"       // the config assembled into parts (Assemble)
	PhaseSecrets      = "secrets"      // the first fetch from the secrets source
	PhaseIdentity     = "identity"     // the host's identity proof
	PhaseRegistration = "registration" // the first registration's outcome
	PhaseUnits        = "units"        // units started, until every one is ready
)

// bootPhase is one step of the boot. run returns "" when the phase did its
// job, else why not; the boot carries on either way (units run without a
// control plane, a missing secret blocks only the units that use it).
type bootPhase struct {
	name string
	run  func(ctx context.Context) (detail string)
}

// phases are the boot after Assemble's params, in order.
func (d *Daemon) phases() []bootPhase {
	return []bootPhase{
		{PhaseSecrets, d.loadSecrets},
		{PhaseIdentity, d.proveIdentity},
		{PhaseRegistration, d.register},
		{PhaseUnits, d.startUnits},
	}
}

// boot runs the phases in order, recording each in the timeline.
func (d *Daemon) boot(ctx context.Context) {
	for _, p := range d.phases() {
		start := time.Now()
		detail := p.run(ctx)
		if ctx.Err() != nil {
			return
		}
		d.record(p.name, start, time.Now(), detail)
	}
}

func (d *Daemon) record(step string, start, end time.Time, detail string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeline = append(d.timeline, api.BootStep{Step: step, At: end.UTC(), TookMS: end.Sub(start).Milliseconds(), Detail: detail})
	d.log.Info("boot phase done", "phase", step, "took", end.Sub(start).Round(time.Millisecond).String(), "detail", detail)
}

// Timeline returns the boot phases done so far.
func (d *Daemon) Timeline() []api.BootStep {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]api.BootStep(nil), d.timeline...)
}

func (d *Daemon) loadSecrets(ctx context.Context) string {
	if d.secrets == nil {
		return "no secrets source"
	}
	defer d.spawn(d.secretLoops...)
	if _, err := d.secrets.Refresh(ctx); err != nil {
		return err.Error()
	}
	return ""
}

func (d *Daemon) proveIdentity(ctx context.Context) string {
	if d.fleet == nil {
		return "no control plane"
	}
	if _, err := d.host.proof(ctx); err != nil {
		return err.Error()
	}
	return ""
}

func (d *Daemon) register(ctx context.Context) string {
	if d.fleet == nil {
		return "no control plane"
	}
	d.spawn(func(ctx context.Context) { _ = d.fleet.Run(ctx) })
	select {
	case <-d.registration.done:
		return d.registration.detail
	case <-ctx.Done():
		return ""
	}
}

// startUnits starts the supervisor (unless the host was deprovisioned or
// interrupted meanwhile) and the loops that act on running units, then
// waits until every unit is ready.
func (d *Daemon) startUnits(ctx context.Context) string {
	d.mu.Lock()
	if d.halted {
		d.mu.Unlock()
		return "not started: units were stopped"
	}
	d.sup.Start(d.unitsCtx)
	d.unitsStarted = true
	d.phase = "running"
	d.mu.Unlock()
	d.log.Info("agent running", "version", d.version, "units", len(d.cfg.Units), "status_socket", d.cfg.SocketPath())
	d.spawn(d.unitLoops...)
	for {
		ch := d.sup.Changed()
		all := true
		for _, st := range d.sup.Status() {
			all = all && st.Ready
		}
		if all {
			return ""
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ""
		}
	}
}

// registration is the first registration's outcome, as the control-plane
// loop reports its status.
type registration struct {
	once   sync.Once
	done   chan struct{}
	detail string
}

func newRegistration() *registration { return &registration{done: make(chan struct{})} }

func (r *registration) observe(st heartbeat.Status) {
	switch {
	case st.Registered:
		r.finish("")
	case st.Gone:
		r.finish("deprovisioned")
	case st.Failures > 0:
		r.finish(st.LastError)
	}
}

func (r *registration) finish(detail string) {
	r.once.Do(func() { r.detail = detail; close(r.done) })
}

// Heartbeat is the host's state as the control plane receives it. It holds
// identifiers, states and counters only, never a secret.
func (d *Daemon) Heartbeat(bootID string, appliedRevision int64) api.HeartbeatRequest {
	units := d.sup.Status()
	hb := api.HeartbeatRequest{AgentVersion: d.version, BootID: bootID, AppliedRevision: appliedRevision}
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
	}
	hb.Boot = d.Timeline()
	d.mu.Lock()
	if d.notice != nil {
		hb.Interruption = d.notice.String()
	}
	d.mu.Unlock()
	return hb
}
