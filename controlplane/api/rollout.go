package api

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Rollout states.
const (
	RolloutRolling    = "rolling"
	RolloutPaused     = "paused"
	RolloutHalted     = "halted"
	RolloutCompleted  = "completed"
	RolloutRolledBack = "rolled_back"
)

// RolloutPolicy shapes a rollout's waves.
type RolloutPolicy struct {
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
func (p RolloutPolicy) Bake() time.Duration { return time.Duration(p.BakeMS) * time.Millisecond }

// WaveTimeout returns the wave timeout.
func (p RolloutPolicy) WaveTimeout() time.Duration {
	return time.Duration(p.WaveTimeoutMS) * time.Millisecond
}

// Validate checks the policy, naming the offending field.
func (p RolloutPolicy) Validate() error {
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

// RolloutRequest starts a rollout (POST /v1/admin/channels/{name}/rollouts).
// Images are merged over the channel's current images.
type RolloutRequest struct {
	Images map[string]string `json:"images"`
	RolloutPolicy
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
	RollbackRevision int64         `json:"rollback_revision,omitempty"`
	Policy           RolloutPolicy `json:"policy"`
	Waves            []Wave        `json:"waves"`
	Current          int           `json:"current_wave"`
	CreatedAt        time.Time     `json:"created_at"`
	UpdatedAt        time.Time     `json:"updated_at"`
	// Version counts the rollout's stored writes.
	Version int64 `json:"version"`
}

// RolloutList is the reply to GET /v1/admin/rollouts.
type RolloutList struct {
	Rollouts []Rollout `json:"rollouts"`
}

// RolloutAction is the optional body of POST
// /v1/admin/channels/{name}/rollout/{pause,resume,rollback}.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

// The digest-pin rule, written once: an image reference is pinned when it
// names a sha256 digest, repo[:tag]@sha256:<64 hex>. The agent runs only
// pinned desired images; the control plane accepts only pinned images
// without a tag (the digest alone says what runs).
var (
	pinnedRE = regexp.MustCompile(`^[a-z0-9]+(?:[._:/-]+[a-z0-9]+)*@sha256:[a-f0-9]{64}$`)
	unitRE   = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
)

// IsDigestPinned reports whether ref is pinned by a sha256 digest.
func IsDigestPinned(ref string) bool { return pinnedRE.MatchString(ref) }

// ValidateImages checks desired images (unit name → reference): every one
// pinned by digest and without a tag, naming the unit of the first that is
// not.
func ValidateImages(images map[string]string) error {
	if len(images) == 0 {
		return fmt.Errorf("images: name at least one unit's image")
	}
	for _, u := range slices.Sorted(maps.Keys(images)) {
		if !unitRE.MatchString(u) {
			return fmt.Errorf("images: unit name %q: want 1-64 of [A-Za-z0-9._-]", u)
		}
		if !IsDigestPinned(images[u]) || hasTag(images[u]) {
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
