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
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Rollout states.
const (
	StateRolling    = "rolling"
	StatePaused     = "paused"
	StateHalted     = "halted"
	StateCompleted  = "completed"
	StateRolledBack = "rolled_back"
)

// Defaults of a Policy.
const (
	DefaultCanary       = 1
	DefaultBatchPercent = 25
	DefaultBake         = 2 * time.Minute
	DefaultWaveTimeout  = 10 * time.Minute
)

// Policy shapes a rollout's waves.
type Policy struct {
	// Canary is the number of hosts in the first wave (default 1).
	Canary int `json:"canary"`
	// BatchPercent is the share of the channel's hosts in each later wave
	// (default 25, at least one host).
	BatchPercent int `json:"batch_percent"`
	// BakeMS is how long every host of a wave stays ready on the new digest
	// before the next wave starts.
	BakeMS int64 `json:"bake_ms"`
	// WaveTimeoutMS bounds how long a wave may take to become ready.
	WaveTimeoutMS int64 `json:"wave_timeout_ms"`
}

// Bake returns the bake time.
func (p Policy) Bake() time.Duration { return time.Duration(p.BakeMS) * time.Millisecond }

// WaveTimeout returns the wave timeout.
func (p Policy) WaveTimeout() time.Duration { return time.Duration(p.WaveTimeoutMS) * time.Millisecond }

// withDefaults fills zero fields from def.
func (p Policy) withDefaults(def Policy) Policy {
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

// Validate checks the policy, naming the offending field.
func (p Policy) Validate() error {
	switch {
	case p.Canary < 0 || p.Canary > 1000:
		return fmt.Errorf("canary: want 0-1000 hosts, got %d", p.Canary)
	case p.BatchPercent < 1 || p.BatchPercent > 100:
		return fmt.Errorf("batch_percent: want 1-100, got %d", p.BatchPercent)
	case p.BakeMS < 0:
		return fmt.Errorf("bake_ms: must not be negative")
	case p.WaveTimeoutMS <= 0:
		return fmt.Errorf("wave_timeout_ms: must be positive")
	}
	return nil
}

// Request starts a rollout (POST /v1/admin/channels/{name}/rollouts).
// Images are merged over the channel's current images.
type Request struct {
	Images map[string]string `json:"images"`
	Policy
}

// Wave is one step of a rollout.
type Wave struct {
	Hosts []string `json:"hosts"`
	// StartedAt is when the wave's hosts were given the new digests.
	StartedAt time.Time `json:"started_at,omitzero"`
	// ReadyAt is since when every host of the wave is ready on them.
	ReadyAt time.Time `json:"ready_at,omitzero"`
	// DoneAt is when the wave finished baking.
	DoneAt time.Time `json:"done_at,omitzero"`
	// Ready lists the hosts of the wave ready on the new digests.
	Ready []string `json:"ready,omitempty"`
}

// Rollout is a channel's staged move from one set of images to another. It
// is the JSON both stored and served by the admin API.
type Rollout struct {
	ID      int64  `json:"id"`
	Channel string `json:"channel"`
	State   string `json:"state"`
	// Reason says why the rollout halted, paused or was rolled back.
	Reason string `json:"reason,omitempty"`
	// From are the images before the rollout, served at FromRevision.
	From         map[string]string `json:"from"`
	FromRevision int64             `json:"from_revision"`
	// To are the new images, served at Revision to hosts of started waves.
	To       map[string]string `json:"to"`
	Revision int64             `json:"revision"`
	// RollbackRevision serves From to every host once rolled back.
	RollbackRevision int64     `json:"rollback_revision,omitempty"`
	Policy           Policy    `json:"policy"`
	Waves            []Wave    `json:"waves"`
	Current          int       `json:"current_wave"`
	CreatedAt        time.Time `json:"created_at"`
	UpdatedAt        time.Time `json:"updated_at"`
	// Version counts the rollout's stored writes.
	Version int64 `json:"version"`
}

var (
	pinnedRE = regexp.MustCompile(`^[a-z0-9]+(?:[._:/-]+[a-z0-9]+)*@sha256:[a-f0-9]{64}$`)
	unitRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// ValidateImages checks that every image is pinned by digest
// (repo@sha256:<64 hex>); tags are refused, naming the unit.
func ValidateImages(images map[string]string) error {
	if len(images) == 0 {
		return fmt.Errorf("images: name at least one unit's image")
	}
	for _, u := range slices.Sorted(maps.Keys(images)) {
		if !unitRE.MatchString(u) {
			return fmt.Errorf("images: unit name %q: want 1-64 of [A-Za-z0-9._-]", u)
		}
		if !pinnedRE.MatchString(images[u]) || hasTag(images[u]) {
			return fmt.Errorf("images.%s: %q is not pinned by digest: want repo@sha256:<64 hex digits>, never a tag", u, images[u])
		}
	}
	return nil
}

// hasTag reports whether ref's repository names a tag (a colon in its last
// path component; a registry's port is in the first).
func hasTag(ref string) bool {
	repo, _, _ := strings.Cut(ref, "@")
	i := strings.LastIndex(repo, "/")
	return i >= 0 && strings.Contains(repo[i+1:], ":") || i < 0 && strings.Contains(repo, ":")
}

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

// Step advances a rolling rollout at now from the hosts' reports and
// returns what changed; it does nothing to a rollout in any other state.
func (r *Rollout) Step(now time.Time, reports Reports) []Transition {
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
			r.halt(now, fmt.Sprintf("host %s: %s", h, why))
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
			r.halt(now, fmt.Sprintf("wave %d: hosts %s not ready on the new digest within %s", r.Current+1, strings.Join(late, ", "), r.Policy.WaveTimeout()))
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
		return append(out, Transition{Kind: "completed", Detail: fmt.Sprintf("%d hosts on %s", r.hostCount(), describe(r.To))})
	}
	// Start the next wave at once: its hosts get the new digests now.
	return append(out, r.Step(now, reports)...)
}

func (r *Rollout) halt(now time.Time, reason string) {
	r.State, r.Reason, r.UpdatedAt = StateHalted, reason, now
}

func (r *Rollout) hostCount() int {
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
func (r *Rollout) started(host string) bool {
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

// Desired returns the desired state of host under this rollout, and a key
// naming which of the rollout's states it is (for reply caching).
func (r *Rollout) Desired(host string) (string, api.DesiredState) {
	switch {
	case r.State == StateRolledBack:
		return "rollback", api.DesiredState{Revision: r.RollbackRevision, Images: r.From}
	case r.State == StateCompleted, r.started(host):
		return "new", api.DesiredState{Revision: r.Revision, Images: r.To}
	}
	return "old", api.DesiredState{Revision: r.FromRevision, Images: r.From}
}
