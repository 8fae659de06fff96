//go:build unix

package config

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

// Unit kinds.
const (
	KindExec      = "exec"
	KindContainer = "container"
)

// Unit is one thing the agent keeps running.
type Unit struct {
	Name string `yaml:"name"`
	// Kind is "exec" (default) or "container".
	Kind    string   `yaml:"kind"`
	Command string   `yaml:"command"`
	Args    []string `yaml:"args"`
	// Env values may be "secret:<name>"; the secret is resolved at start.
	Env map[string]string `yaml:"env"`
	// Files are written before start (secret files go under run_dir, 0600).
	Files []File `yaml:"files"`
	Dir   string `yaml:"dir"`
	// User runs the process as this user (name or uid).
	User string `yaml:"user"`
	// After lists units that must be ready before this one starts.
	After   []string `yaml:"after"`
	Ready   *Probe   `yaml:"ready"`
	Stop    Stop     `yaml:"stop"`
	Restart Restart  `yaml:"restart"`
	// Container holds the container settings of a kind: container unit.
	Container *Container `yaml:"container"`
	// Builtin marks a unit filled in by the agent (e.g. "cloudflared").
	Builtin string `yaml:"builtin"`
}

// File is a file written before the unit starts.
type File struct {
	Path string `yaml:"path"`
	// Content is literal text or a whole "secret:<name>" reference.
	Content string `yaml:"content"`
	// Mode is an octal string such as "0600"; default 0600.
	Mode string `yaml:"mode"`
	// Owner says who the file belongs to once written:
	//   - "agent" (default): the agent writes it before each start and
	//     removes a secret file when the unit stops for good and at exit;
	//   - "unit": the unit may rewrite it (a token its platform mints at
	//     first register). The agent writes it only when the source holds a
	//     value the file does not already hold, starts the unit without it
	//     when the source has no value, and never removes it.
	Owner string `yaml:"owner"`
}

// File owners.
const (
	OwnerAgent = "agent"
	OwnerUnit  = "unit"
)

// OwnedByUnit reports whether the unit owns the file once written.
func (f File) OwnedByUnit() bool { return f.Owner == OwnerUnit }

// Probe decides when a unit is ready. Exactly one of HTTP or TCP is set.
type Probe struct {
	// HTTP is a URL; ready when it answers Status (default: any 2xx).
	HTTP   string `yaml:"http"`
	Status int    `yaml:"status"`
	// TCP is host:port; ready when a connection is accepted. (Not for a
	// port Docker publishes: its proxy accepts even when nothing listens.)
	TCP string `yaml:"tcp"`
	// DockerHealth: ready when the container's Docker healthcheck says healthy.
	DockerHealth bool     `yaml:"docker_health"`
	Interval     Duration `yaml:"interval"`
	Timeout      Duration `yaml:"timeout"`
}

// Stop says how a unit is stopped.
type Stop struct {
	// Signal is sent to the process group first (default SIGTERM).
	Signal string `yaml:"signal"`
	// Grace is how long to wait before SIGKILL.
	Grace Duration `yaml:"grace"`
}

// Restart is a unit's restart policy.
type Restart struct {
	// Policy is "always" (default), "on-failure" or "never".
	Policy       string   `yaml:"policy"`
	InitialDelay Duration `yaml:"initial_delay"`
	MaxDelay     Duration `yaml:"max_delay"`
	// StableAfter resets the backoff once a run has lasted this long.
	StableAfter Duration `yaml:"stable_after"`
	// Budget is how many restarts are allowed within Window before the unit fails.
	Budget int      `yaml:"budget"`
	Window Duration `yaml:"window"`
	// NoRestartExitCodes are exit codes after which the unit is not restarted.
	NoRestartExitCodes []int `yaml:"no_restart_exit_codes"`
}

// Duration is a time.Duration written as "1m30s" in YAML.
type Duration struct{ time.Duration }

// D returns a Duration.
func D(d time.Duration) Duration { return Duration{d} }

// UnmarshalYAML accepts Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a duration such as \"10s\"", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. \"500ms\", \"10s\", \"2m\")", n.Line, n.Value)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// ApplyDefaults fills empty fields with their defaults.
func (c *Config) ApplyDefaults() {
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.Log.LinesPerSecond == 0 {
		c.Log.LinesPerSecond = DefaultLogLines
	}
	if c.Log.Burst == 0 {
		c.Log.Burst = DefaultLogBurst
	}
	if c.Log.MaxLineBytes == 0 {
		c.Log.MaxLineBytes = DefaultLogLineBytes
	}
	if c.Secrets.Refresh.Duration == 0 {
		c.Secrets.Refresh.Duration = DefaultRefresh
	}
	if c.Secrets.Jitter == 0 {
		c.Secrets.Jitter = DefaultRefreshJitter
	}
	for i := range c.Units {
		c.Units[i].applyDefaults()
	}
	c.applyWorkspace()
}

func (u *Unit) applyDefaults() {
	if u.Kind == "" {
		u.Kind = KindExec
	}
	if u.Stop.Signal == "" {
		u.Stop.Signal = "SIGTERM"
	}
	if u.Stop.Grace.Duration == 0 {
		u.Stop.Grace.Duration = DefaultStopGrace
	}
	r := &u.Restart
	if r.Policy == "" {
		r.Policy = "always"
	}
	if r.InitialDelay.Duration == 0 {
		r.InitialDelay.Duration = DefaultInitialDelay
	}
	if r.MaxDelay.Duration == 0 {
		r.MaxDelay.Duration = max(DefaultMaxDelay, r.InitialDelay.Duration)
	}
	if r.StableAfter.Duration == 0 {
		r.StableAfter.Duration = DefaultStableAfter
	}
	if r.Budget == 0 {
		r.Budget = DefaultBudget
	}
	if r.Window.Duration == 0 {
		r.Window.Duration = DefaultBudgetWindow
	}
	if p := u.Ready; p != nil {
		if p.Interval.Duration == 0 {
			p.Interval.Duration = DefaultProbeInterval
		}
		if p.Timeout.Duration == 0 {
			p.Timeout.Duration = DefaultProbeTimeout
		}
	}
}
