package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/heartbeat"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
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

// bootID identifies this boot of the machine; a reboot registers again.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// newFleet builds the control-plane loop: registration with the host's
// proof, heartbeats from the daemon's state, desired state into desired,
// and on 410 every unit stopped and the agent idle.
func newFleet(cfg *config.Config, store *secretstore.Store, log *slog.Logger, version string, d **Daemon, desired *Desired) (*heartbeat.Loop, error) {
	client, err := api.New(api.Options{BaseURL: cfg.ControlPlane.URL, CAFile: cfg.ControlPlane.CAFile, Logger: log})
	if err != nil {
		return nil, err
	}
	boot, err := bootID()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	return heartbeat.New(heartbeat.Config{
		Client: client, URL: cfg.ControlPlane.URL, StateDir: cfg.StateDir, Logger: log,
		Proof: proofSource(cfg, store, log),
		Register: api.RegisterRequest{Role: cfg.Role, Org: cfg.ControlPlane.Org, Workspace: cfg.ControlPlane.Workspace,
			AgentVersion: version, BootID: boot, Hostname: host},
		Snapshot: func() api.HeartbeatRequest {
			(*d).MarkBoot(StepRegistered)
			return (*d).Heartbeat(boot, desired.appliedRev())
		},
		OnReply: func(r api.HeartbeatResponse) { desired.set(r.Desired) },
		OnGone: func() {
			log.Warn("control plane says this host was deprovisioned: stopping every unit; the agent stays idle")
			(*d).SetPhase("idle")
			(*d).sup.StopUnits((*d).sup.Names()...)
		},
	})
}

// proofSource returns how the host proves its identity: the EC2 instance
// identity document over IMDSv2, or an enrollment token off EC2.
func proofSource(cfg *config.Config, store *secretstore.Store, log *slog.Logger) func(context.Context) (api.Proof, error) {
	if cfg.Identity.Mode == "enrollment" {
		ref := cfg.Identity.EnrollmentToken
		return func(context.Context) (api.Proof, error) {
			tok, err := enrollmentToken(ref, store)
			if err != nil {
				return api.Proof{}, err
			}
			mid, _ := os.ReadFile("/etc/machine-id")
			return api.Proof{EnrollmentToken: tok, MachineID: strings.TrimSpace(string(mid))}, nil
		}
	}
	ic := identity.New(identity.Options{Endpoint: cfg.Identity.IMDSEndpoint, Logger: log})
	return func(ctx context.Context) (api.Proof, error) {
		id, err := ic.Identity(ctx)
		if err != nil {
			return api.Proof{}, err
		}
		return api.Proof{IdentityPKCS7: id.PKCS7, IdentityDocument: string(id.Document)}, nil
	}
}

// enrollmentToken reads identity.enrollment_token: "file:<path>" or "secret:<name>".
func enrollmentToken(ref string, store *secretstore.Store) (secretstore.Secret, error) {
	if path, ok := strings.CutPrefix(ref, "file:"); ok {
		b, err := os.ReadFile(path)
		if err != nil {
			return secretstore.Secret{}, fmt.Errorf("identity.enrollment_token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return secretstore.Secret{}, fmt.Errorf("identity.enrollment_token: %s is empty", path)
		}
		return secretstore.New(tok), nil
	}
	if store == nil {
		return secretstore.Secret{}, errors.New("identity.enrollment_token names a secret but secrets.source is not set")
	}
	return store.Resolve(ref)
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
