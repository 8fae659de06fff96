// Package rollout moves the hosts of a release channel to new image digests
// in waves: a canary, then batches, each wave baking with every host ready on
// the new digest before the next starts. A host that rolls the new digest
// back, or a wave that is not ready within its timeout, halts the rollout.
// The desired state each host is served comes from its rollout: hosts not yet
// in a started wave keep the previous digests.
//
// Rollout holds the pure decisions (plan, step, desired state) with time
// passed in; Manager keeps rollouts in memory, persists them on every change
// and serves the admin operations.
package rollout

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Rollout states.
const (
	StateRolling    = api.RolloutRolling
	StatePaused     = api.RolloutPaused
	StateHalted     = api.RolloutHalted
	StateCompleted  = api.RolloutCompleted
	StateRolledBack = api.RolloutRolledBack
)

// Defaults of a Policy.
const (
	DefaultCanary       = 1
	DefaultBatchPercent = 25
	DefaultBake         = 2 * time.Minute
	DefaultWaveTimeout  = 10 * time.Minute
)

// The wire types live in controlplane/api; these names are the package's
// own view of them.
type (
	// Policy shapes a rollout's waves.
	Policy = api.RolloutPolicy
	// Request starts a rollout.
	Request = api.RolloutRequest
	// Wave is one step of a rollout.
	Wave = api.Wave
	// Rollout is a channel's staged move between two sets of images.
	Rollout = api.Rollout
)

// withDefaults fills p's zero fields from def.
func withDefaults(p, def Policy) Policy {
	if p.Canary == 0 {
		p.Canary = def.Canary
	}
	if p.BatchPercent == 0 {
		p.BatchPercent = def.BatchPercent
	}
	if p.BakeMS == 0 {
		p.BakeMS = def.BakeMS
	}
	if p.WaveTimeoutMS == 0 {
		p.WaveTimeoutMS = def.WaveTimeoutMS
	}
	return p
}

// ValidateImages checks desired images: api.ValidateImages, the one
// digest-pin rule.
func ValidateImages(images map[string]string) error { return api.ValidateImages(images) }

// Plan splits hosts (sorted for a stable plan) into a canary and batches.
func Plan(hosts []string, p Policy) []Wave {
	hs := slices.Clone(hosts)
	sort.Strings(hs)
	var waves []Wave
	if c := min(p.Canary, len(hs)); c > 0 {
		waves = append(waves, Wave{Hosts: hs[:c]})
		hs = hs[c:]
	}
	batch := max(1, (len(hosts)*p.BatchPercent+99)/100)
	for len(hs) > 0 {
		n := min(batch, len(hs))
		waves = append(waves, Wave{Hosts: hs[:n]})
		hs = hs[n:]
	}
	return waves
}

// digestOf returns the sha256:... part of an image reference, or ref.
func digestOf(ref string) string {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		return d
	}
	return ref
}

// Reports returns the latest heartbeat of a host, nil if none.
type Reports func(hostID string) *api.HeartbeatRequest

// readyOn reports whether the host runs every unit of to, ready, on its new
// digest. Units the host does not run are not its concern.
func readyOn(rep *api.HeartbeatRequest, to map[string]string) bool {
	if rep == nil {
		return false
	}
	for _, u := range rep.Units {
		want, ok := to[u.Name]
		if !ok {
			continue
		}
		got := u.ImageDigest
		if got == "" {
			got = digestOf(u.Image)
		}
		if u.State != api.UnitReady || got != digestOf(want) {
			return false
		}
	}
	return true
}

// rolledBack returns a description when the host rolled back a unit from
// its new digest.
func rolledBack(rep *api.HeartbeatRequest, to map[string]string) string {
	if rep == nil {
		return ""
	}
	for _, up := range rep.Updates {
		want, ok := to[up.Unit]
		if ok && up.Phase == "rolled_back" && digestOf(up.Digest) == digestOf(want) {
			msg := "unit " + up.Unit + " rolled back from " + digestOf(want)
			if up.Detail != "" {
				msg += ": " + up.Detail
			}
			return msg
		}
	}
	return ""
}

// Transition is a change Step made, for events and logs.
type Transition struct {
	// Kind is "wave_started", "completed" or "halted".
	Kind   string
	HostID string
	Detail string
}

// Step advances a rolling rollout r at now from the hosts' reports and
// returns what changed; it does nothing to a rollout in any other state.
func Step(r *Rollout, now time.Time, reports Reports) []Transition {
	if r.State != StateRolling || r.Current >= len(r.Waves) {
		return nil
	}
	var out []Transition
	w := &r.Waves[r.Current]
	if w.StartedAt.IsZero() {
		w.StartedAt = now
		out = append(out, Transition{Kind: "wave_started", Detail: fmt.Sprintf("wave %d of %d: %s", r.Current+1, len(r.Waves), strings.Join(w.Hosts, ", "))})
	}
	var ready, late []string
	for _, h := range w.Hosts {
		rep := reports(h)
		if why := rolledBack(rep, r.To); why != "" {
			halt(r, now, fmt.Sprintf("host %s: %s", h, why))
			return append(out, Transition{Kind: "halted", HostID: h, Detail: r.Reason})
		}
		if readyOn(rep, r.To) {
			ready = append(ready, h)
		} else {
			late = append(late, h)
		}
	}
	if !slices.Equal(ready, w.Ready) {
		w.Ready = ready
		out = append(out, Transition{Kind: "progress"})
	}
	if len(late) > 0 {
		w.ReadyAt = time.Time{}
		if now.Sub(w.StartedAt) > r.Policy.WaveTimeout() {
			halt(r, now, fmt.Sprintf("wave %d: hosts %s not ready on the new digest within %s", r.Current+1, strings.Join(late, ", "), r.Policy.WaveTimeout()))
			return append(out, Transition{Kind: "halted", HostID: late[0], Detail: r.Reason})
		}
		return out
	}
	if w.ReadyAt.IsZero() {
		w.ReadyAt = now
		out = append(out, Transition{Kind: "wave_ready"})
	}
	if now.Sub(w.ReadyAt) < r.Policy.Bake() {
		return out
	}
	w.DoneAt = now
	r.Current++
	r.UpdatedAt = now
	if r.Current == len(r.Waves) {
		r.State = StateCompleted
		return append(out, Transition{Kind: "completed", Detail: fmt.Sprintf("%d hosts on %s", hostCount(r), describe(r.To))})
	}
	// Start the next wave at once: its hosts get the new digests now.
	return append(out, Step(r, now, reports)...)
}

func halt(r *Rollout, now time.Time, reason string) {
	r.State, r.Reason, r.UpdatedAt = StateHalted, reason, now
}

func hostCount(r *Rollout) int {
	n := 0
	for _, w := range r.Waves {
		n += len(w.Hosts)
	}
	return n
}

// describe renders images as "unit=digest, ..." in unit order.
func describe(images map[string]string) string {
	var parts []string
	for _, u := range slices.Sorted(maps.Keys(images)) {
		parts = append(parts, u+"="+digestOf(images[u]))
	}
	return strings.Join(parts, ", ")
}

// started reports whether host is in a wave that has started.
func started(r *Rollout, host string) bool {
	for _, w := range r.Waves {
		if w.StartedAt.IsZero() {
			return false
		}
		if slices.Contains(w.Hosts, host) {
			return true
		}
	}
	return false
}

// Desired returns the desired state of host under rollout r, and a key
// naming which of the rollout's states it is (for reply caching).
func Desired(r *Rollout, host string) (string, api.DesiredState) {
	switch {
	case r.State == StateRolledBack:
		return "rollback", api.DesiredState{Revision: r.RollbackRevision, Images: r.From}
	case r.State == StateCompleted, started(r, host):
		return "new", api.DesiredState{Revision: r.Revision, Images: r.To}
	}
	return "old", api.DesiredState{Revision: r.FromRevision, Images: r.From}
}
