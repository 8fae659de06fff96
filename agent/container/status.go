package container

import (
	"strconv"
	"time"
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

// Report flattens the status for supervisor.Reporter.
func (s Status) Report() map[string]string {
	m := map[string]string{"image": s.Image}
	if s.Phase == PhaseIdle {
		return m
	}
	m["update_phase"] = string(s.Phase)
	m["update_to"] = s.To
	if s.Reason != "" {
		m["update_reason"] = s.Reason
	}
	if s.Phase == PhasePulling {
		m["pull_bytes"] = strconv.FormatInt(s.Pull.Current, 10) + "/" + strconv.FormatInt(s.Pull.Total, 10)
	}
	return m
}

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
