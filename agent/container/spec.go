//go:build unix

// Package container runs the agent's container units on the local Docker
// engine (through its own small Engine API client, docker.go, API version
// negotiated) and updates their images with a health-gated, crash-safe
// rollout.
//
// Containers carry labels naming the unit, the agent instance and a hash of
// their spec (image, env, volumes, ports, network, command, user,
// healthcheck, stop signal), so a restarted agent adopts a matching running
// container instead of recreating it, and replaces one whose spec changed.
// Secret values reach the hash only through a sha256 of each env entry and
// never appear in a label. Named volumes are never removed.
//
// An update (Driver.Update) pulls the new image while the old container
// serves, stops the old one (keeping it), starts the new one with freshly
// materialised env, waits for readiness within a window, then commits
// (removes the old container, keeps the previous image for one rollback) or
// rolls back (removes the new one, restarts the old one) and remembers the
// bad image. A journal in the state directory, written atomically before
// every step, lets a restarted agent finish or undo an interrupted update so
// exactly one version runs.
package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

// Label keys the driver puts on containers, volumes and networks.
const (
	LabelUnit     = "ai.molecule.unit"
	LabelAgent    = "ai.molecule.agent"
	LabelSpecHash = "ai.molecule.spec-hash"
	LabelImage    = "ai.molecule.image"
	// LabelUpdate holds the update ID on a container created by an update,
	// so recovery finds it even if the agent died before journalling its ID.
	LabelUpdate = "ai.molecule.update"
)

// Spec is what a container unit runs, apart from its env (given at Start)
// and its image (the configured one until an update commits another).
type Spec struct {
	Unit        string
	Image       string
	Volumes     []config.VolumeMount
	Ports       []config.PortBinding
	Network     string
	Cmd         []string
	User        string
	Healthcheck *config.Healthcheck
	// StopSignal defaults to SIGTERM; StopGrace to 10 s.
	StopSignal string
	StopGrace  time.Duration
	// UpdatePolicy is config.UpdateAuto or config.UpdateNever.
	UpdatePolicy string
	// SecretFiles are passed as read-only 0400 files (secretfiles.go).
	SecretFiles []config.SecretFile
}

// SpecFromUnit builds the Spec of a validated kind: container unit.
func SpecFromUnit(u config.Unit) Spec {
	c := u.Container
	return Spec{
		Unit:         u.Name,
		Image:        c.Image,
		Volumes:      c.Mounts(),
		Ports:        c.Bindings(),
		Network:      c.Network,
		Cmd:          slices.Clone(c.Cmd),
		User:         c.User,
		Healthcheck:  c.Healthcheck,
		StopSignal:   u.Stop.Signal,
		StopGrace:    u.Stop.Grace.Duration,
		UpdatePolicy: c.UpdatePolicy(),
		SecretFiles:  slices.Clone(c.SecretFiles),
	}
}

func (s Spec) stopSignal() string {
	if s.StopSignal == "" {
		return "SIGTERM"
	}
	return s.StopSignal
}

func (s Spec) stopGrace() time.Duration {
	if s.StopGrace <= 0 {
		return 10 * time.Second
	}
	return s.StopGrace
}

// hash is the spec hash of s running image with env. Each env entry enters
// only as its own sha256, so the label never carries a secret value.
func (s Spec) hash(image string, env []string) string {
	envSums := make([]string, 0, len(env))
	for _, e := range env {
		sum := sha256.Sum256([]byte(e))
		envSums = append(envSums, hex.EncodeToString(sum[:]))
	}
	slices.Sort(envSums)
	h := struct {
		Image       string
		Env         []string
		Volumes     []config.VolumeMount
		Ports       []config.PortBinding
		Network     string
		Cmd         []string
		User        string
		Healthcheck *config.Healthcheck
		StopSignal  string
	}{image, envSums, s.Volumes, s.Ports, s.Network, s.Cmd, s.User, s.Healthcheck, s.stopSignal()}
	b, _ := json.Marshal(h) // plain data: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
