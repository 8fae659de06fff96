//go:build unix

package container

import (
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Phase is where a unit's image update is.
type Phase string

// Update phases, as status and heartbeats report them.
const (
	PhaseIdle       Phase = ""
	PhasePulling    Phase = "pulling"
	PhaseStarting   Phase = "starting"
	PhaseWaiting    Phase = "waiting"
	PhaseCommitted  Phase = "committed"
	PhaseRolledBack Phase = "rolled_back"
	// PhaseFailed is an update that never touched the running container
	// (the pull failed); it is retried on the next desired-state check.
	PhaseFailed Phase = "failed"
)

// PullProgress sums the layer progress of a pull.
type PullProgress struct {
	Layers  int   `json:"layers"`
	Current int64 `json:"current_bytes"`
	Total   int64 `json:"total_bytes"`
}

// Status is a unit's image and its last or current update. It holds no
// secret.
type Status struct {
	// Image is the image the unit runs.
	Image string `json:"image"`
	Phase Phase  `json:"phase,omitempty"`
	// From and To are the images of the last or current update.
	From   string       `json:"from,omitempty"`
	To     string       `json:"to,omitempty"`
	Reason string       `json:"reason,omitempty"`
	Pull   PullProgress `json:"pull"`
	Since  time.Time    `json:"since,omitzero"`
}

// Facet is the status as the unit status's container facet.
func (s Status) Facet() *supervisor.ContainerFacet {
	f := &supervisor.ContainerFacet{Image: s.Image}
	if _, dg, ok := strings.Cut(s.Image, "@"); ok {
		f.Digest = dg
	}
	if s.Phase == PhaseIdle {
		return f
	}
	f.Update = &supervisor.UpdateFacet{Phase: string(s.Phase), To: s.To, Reason: s.Reason}
	if s.Phase == PhasePulling {
		f.Update.PullBytes, f.Update.PullTotal = s.Pull.Current, s.Pull.Total
	}
	return f
}

// Report is the unit's supervisor.Reporter: its container facet.
func (d *Driver) Report(f *supervisor.Facets) { f.Container = d.Status().Facet() }

// Status returns the unit's image and update progress.
func (d *Driver) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

func (d *Driver) setPhase(p Phase, from, to, reason string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var pull PullProgress
	if d.status.To == to && p != PhasePulling {
		pull = d.status.Pull // the same update's pull stays visible
	}
	d.status = Status{Image: d.currentLocked(), Phase: p, From: from, To: to, Reason: reason, Pull: pull, Since: time.Now()}
}

func (d *Driver) setPull(p PullProgress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.status.Pull = p
}
