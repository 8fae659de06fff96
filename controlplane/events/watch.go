package events

import (
	"fmt"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Watcher derives events from the changes between a host's heartbeats. The
// first report of a host (after its registration or the control plane's
// restart) is a baseline: it emits nothing, so a restart does not repeat
// old events.
type Watcher struct {
	// TunnelWindow is how long a tunnel may have no ready connection before
	// a tunnel_not_ready event (default 2 minutes).
	TunnelWindow time.Duration

	mu    sync.Mutex
	hosts map[string]*view
}

type view struct {
	units   map[string]string // unit -> state
	updates map[string]string // unit -> phase + " " + digest
	// tunnelDown is since when the tunnel has had no ready connection.
	tunnelDown time.Time
	reported   bool
}

// NewWatcher returns a Watcher with the given tunnel window (0: default).
func NewWatcher(tunnelWindow time.Duration) *Watcher {
	if tunnelWindow <= 0 {
		tunnelWindow = 2 * time.Minute
	}
	return &Watcher{TunnelWindow: tunnelWindow, hosts: map[string]*view{}}
}

// Observe records a host's report at now and returns the events it implies.
func (w *Watcher) Observe(hostID string, now time.Time, rep *api.HeartbeatRequest) []store.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	v, seen := w.hosts[hostID]
	if !seen {
		v = &view{}
		w.hosts[hostID] = v
	}
	units := make(map[string]string, len(rep.Units))
	updates := make(map[string]string, len(rep.Updates))
	var out []store.Event
	// subject: repeats of the same kind for the same unit coalesce in the
	// store into one event with a count (see store.EventPolicy).
	ev := func(kind, subject, detail string) {
		if seen {
			out = append(out, store.Event{HostID: hostID, Type: kind, Subject: subject, Detail: detail, At: now})
		}
	}
	for _, u := range rep.Units {
		units[u.Name] = u.State
		if u.State == api.UnitFailed && v.units[u.Name] != api.UnitFailed {
			ev(KindUnitFailed, u.Name, fmt.Sprintf("unit %s failed after %d restarts: %s", u.Name, u.Restarts, u.Detail))
		}
	}
	for _, up := range rep.Updates {
		key := up.Phase + " " + up.Digest
		updates[up.Unit] = key
		if v.updates[up.Unit] == key {
			continue
		}
		switch up.Phase {
		case "committed":
			ev(KindUpdateCommitted, up.Unit+" "+up.Digest, fmt.Sprintf("unit %s now runs %s", up.Unit, up.Digest))
		case "rolled_back":
			ev(KindUpdateRolledBack, up.Unit+" "+up.Digest, fmt.Sprintf("unit %s rolled back from %s: %s", up.Unit, up.Digest, up.Detail))
		}
	}
	v.units, v.updates = units, updates
	switch {
	case rep.Tunnel == nil || rep.Tunnel.ReadyConnections > 0:
		v.tunnelDown, v.reported = time.Time{}, false
	case v.tunnelDown.IsZero():
		v.tunnelDown = now
	}
	return out
}

// Sweep returns a tunnel_not_ready event, once per outage, for every host
// whose tunnel has had no ready connection for longer than the window.
func (w *Watcher) Sweep(now time.Time) []store.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []store.Event
	for id, v := range w.hosts {
		if v.tunnelDown.IsZero() || v.reported || now.Sub(v.tunnelDown) <= w.TunnelWindow {
			continue
		}
		v.reported = true
		out = append(out, store.Event{HostID: id, Type: KindTunnelNotReady, Subject: "tunnel",
			Detail: fmt.Sprintf("tunnel has had no ready connection since %s", v.tunnelDown.UTC().Format(time.RFC3339)), At: now})
	}
	return out
}

// Forget drops a host (deprovisioned).
func (w *Watcher) Forget(hostID string) {
	w.mu.Lock()
	delete(w.hosts, hostID)
	w.mu.Unlock()
}
