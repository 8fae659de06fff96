//go:build unix

package daemon

import (
	"log/slog"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/heartbeat"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Desired is the latest desired state from the control plane, for the parts
// that apply it (image updates).
type Desired struct {
	mu      sync.Mutex
	state   api.DesiredState
	applied int64
	changed chan struct{}
}

func newDesired() *Desired { return &Desired{changed: make(chan struct{}, 1)} }

func (s *Desired) set(d api.DesiredState) {
	s.mu.Lock()
	same := d.Revision == s.state.Revision
	s.state = d
	s.mu.Unlock()
	if !same {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// Get returns the latest desired state.
func (s *Desired) Get() api.DesiredState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Changed signals a new revision.
func (s *Desired) Changed() <-chan struct{} { return s.changed }

// SetApplied records the revision the host has applied.
func (s *Desired) SetApplied(rev int64) {
	s.mu.Lock()
	s.applied = rev
	s.mu.Unlock()
}

func (s *Desired) appliedRev() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied
}

// newFleet builds the control-plane loop: registration with the host's
// proof, heartbeats from the daemon's state, desired state into desired,
// the registration outcome into the boot, and on 410 every unit stopped and
// the agent idle.
func newFleet(cfg *config.Config, h *host, d *Daemon, desired *Desired, log *slog.Logger) (*heartbeat.Loop, error) {
	if h.bootErr != nil {
		return nil, h.bootErr
	}
	client, err := api.New(api.Options{BaseURL: cfg.ControlPlane.URL, CAFile: cfg.ControlPlane.CAFile, Logger: log})
	if err != nil {
		return nil, err
	}
	return heartbeat.New(heartbeat.Config{
		Client: client, URL: cfg.ControlPlane.URL, StateDir: cfg.StateDir, Logger: log,
		Proof: h.proof,
		Register: api.RegisterRequest{Role: cfg.Role, Org: cfg.ControlPlane.Org, Workspace: cfg.ControlPlane.Workspace,
			AgentVersion: d.version, BootID: h.bootID, Hostname: h.hostname},
		Snapshot: func() api.HeartbeatRequest { return d.Heartbeat(h.bootID, desired.appliedRev()) },
		OnReply:  func(r api.HeartbeatResponse) { desired.set(r.Desired) },
		OnStatus: d.registration.observe,
		OnGone: func() {
			log.Warn("control plane says this host was deprovisioned: stopping every unit; the agent stays idle")
			d.SetPhase("idle")
			d.stopUnits()
		},
	})
}

// fleetSection is the control-plane part of the status report.
func fleetSection(st heartbeat.Status) map[string]any {
	m := map[string]any{"registered": st.Registered, "host_id": st.HostID}
	if st.Gone {
		m["deprovisioned"] = true
	}
	if st.Interval > 0 {
		m["interval"] = st.Interval.String()
	}
	if !st.LastBeat.IsZero() {
		m["last_heartbeat"] = st.LastBeat.UTC().Format(time.RFC3339)
	}
	if st.LastError != "" {
		m["last_error"] = st.LastError
		m["failures"] = st.Failures
	}
	return m
}
