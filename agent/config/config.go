//go:build unix

// Package config loads and validates agent.yaml: the host's role, its units,
// and the settings for secrets, identity, the control plane and the status API.
//
// Decoding is strict (an unknown key is an error) and every validation error
// names the field path, e.g. "units[2].restart.max_delay: must be ≥ initial_delay".
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults used when agent.yaml leaves a field empty.
const (
	DefaultStateDir      = "/var/lib/molecule-agent"
	DefaultRunDir        = "/run/molecule-agent"
	DefaultSocketName    = "agent.sock"
	DefaultStopGrace     = 10 * time.Second
	DefaultInitialDelay  = 100 * time.Millisecond
	DefaultMaxDelay      = 30 * time.Second
	DefaultStableAfter   = 60 * time.Second
	DefaultBudget        = 10
	DefaultBudgetWindow  = 5 * time.Minute
	DefaultProbeInterval = time.Second
	DefaultProbeTimeout  = 2 * time.Second
	DefaultLogLines      = 200 // lines per second per unit
	DefaultLogBurst      = 1000
	DefaultLogLineBytes  = 4096
	DefaultRefresh       = 5 * time.Minute
	DefaultRefreshJitter = 0.2
)

// Config is the whole of agent.yaml.
type Config struct {
	// Role names a built-in set of units ("tenant", "workspace") or is empty.
	Role string `yaml:"role"`
	// StateDir holds what must survive a reboot (host ID and token, journals).
	StateDir string `yaml:"state_dir"`
	// RunDir holds the status socket and secret files; emptied on exit.
	RunDir       string       `yaml:"run_dir"`
	Status       Status       `yaml:"status"`
	Log          Log          `yaml:"log"`
	Secrets      Secrets      `yaml:"secrets"`
	Identity     Identity     `yaml:"identity"`
	ControlPlane ControlPlane `yaml:"control_plane"`
	// Updates configures image updates of container units.
	Updates Updates `yaml:"updates"`
	// Workspace configures the runtime of a workspace host.
	Workspace Workspace `yaml:"workspace"`
	Units     []Unit    `yaml:"units"`
}

// Status configures the local status API.
type Status struct {
	// Socket is the unix socket path; default <run_dir>/agent.sock.
	Socket string `yaml:"socket"`
}

// Updates configures how container units follow their desired images.
type Updates struct {
	// DesiredFile is a local desired state ({revision, images: {unit:
	// repo@sha256:…}}) followed when there is no control plane, or beside it.
	DesiredFile string `yaml:"desired_file"`
	// Window bounds the wait for an updated unit to be ready before it is
	// rolled back (default 60s).
	Window Duration `yaml:"window"`
}

// Log bounds what each unit's output may cost.
type Log struct {
	// LinesPerSecond is the sustained rate of child output lines logged per unit.
	LinesPerSecond int `yaml:"lines_per_second"`
	// Burst is how many lines may be logged at once above the rate.
	Burst int `yaml:"burst"`
	// MaxLineBytes truncates longer lines.
	MaxLineBytes int `yaml:"max_line_bytes"`
}

// Secrets says where the host's secrets come from.
type Secrets struct {
	// Source is "ssm", "file" or empty (no secrets).
	Source string `yaml:"source"`
	// Prefix is the SSM path prefix, e.g. /molecule/prod/tenants/acme.
	Prefix string `yaml:"prefix"`
	// Region overrides the region from the environment or IMDS.
	Region string `yaml:"region"`
	// Endpoint overrides the SSM endpoint (tests, VPC endpoints).
	Endpoint string `yaml:"endpoint"`
	// File is the path of a name: value YAML file when Source is "file".
	File string `yaml:"file"`
	// Refresh is how often secrets are fetched again.
	Refresh Duration `yaml:"refresh"`
	// Jitter is the ± share of Refresh added at random (0.2 = ±20 %).
	Jitter float64 `yaml:"jitter"`
}

// Identity says how the host proves who it is to the control plane.
type Identity struct {
	// Mode is "imds" (EC2 instance identity document) or "enrollment".
	Mode string `yaml:"mode"`
	// IMDSEndpoint overrides the metadata endpoint (tests).
	IMDSEndpoint string `yaml:"imds_endpoint"`
	// EnrollmentToken is a secret reference ("secret:enrollment-token") or a
	// file path ("file:/etc/molecule-agent/enrollment-token").
	EnrollmentToken string `yaml:"enrollment_token"`
	// WatchInterruptions polls IMDS for spot and Auto Scaling termination notices.
	WatchInterruptions bool `yaml:"watch_interruptions"`
}

// ControlPlane says where the agent registers and heartbeats.
type ControlPlane struct {
	// URL is https:// (plain http only to a loopback address).
	URL string `yaml:"url"`
	// CAFile is a PEM bundle of the CAs that may sign the control plane's
	// certificate, instead of the system's (a private CA).
	CAFile    string `yaml:"ca_file"`
	Org       string `yaml:"org"`
	Workspace string `yaml:"workspace"`
	Channel   string `yaml:"channel"`
}

// Load reads and validates the file at path, applying defaults.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("config %s: %w; %s", path, fs.ErrNotExist, whatIsNeeded)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	c, err := Parse(io.LimitReader(f, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML strictly, applies defaults and validates.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, decodeError(err)
	}
	// A second document would be silently ignored: refuse it.
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("config holds more than one YAML document; keep one")
	}
	if isEmpty(&doc) {
		return nil, errors.New("config is empty: " + whatIsNeeded)
	}
	if err := mergeRole(&doc); err != nil {
		return nil, err
	}
	var c Config
	if doc.Kind != 0 {
		merged, err := yaml.Marshal(&doc)
		if err != nil {
			return nil, decodeError(err)
		}
		strict := yaml.NewDecoder(bytes.NewReader(merged))
		strict.KnownFields(true)
		if err := strict.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
			return nil, decodeError(err)
		}
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// whatIsNeeded tells someone facing an empty or missing config what to put
// in it.
const whatIsNeeded = "set role (tenant or workspace) with control_plane and secrets, or list units; " +
	"see /usr/share/doc/molecule-agent/agent.example.yaml, or let `molecule-agent bootstrap` write it"

// isEmpty reports whether doc holds no settings: no document, only
// comments, null, or an empty mapping.
func isEmpty(doc *yaml.Node) bool {
	n := doc
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return true
		}
		n = n.Content[0]
	}
	switch n.Kind {
	case 0:
		return true
	case yaml.ScalarNode:
		return n.Tag == "!!null"
	case yaml.MappingNode:
		return len(n.Content) == 0
	}
	return false
}

// decodeError shortens yaml.v3's messages, which already carry line numbers
// and the unknown field's name.
func decodeError(err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg := te.Errors[0]
		if len(te.Errors) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(te.Errors)-1)
		}
		return fmt.Errorf("invalid config: %s", msg)
	}
	return fmt.Errorf("invalid config: %w", err)
}

// SocketPath is where the status API listens.
func (c *Config) SocketPath() string {
	if c.Status.Socket != "" {
		return c.Status.Socket
	}
	return c.RunDir + "/" + DefaultSocketName
}

// Unit returns the unit called name, or nil.
func (c *Config) Unit(name string) *Unit {
	for i := range c.Units {
		if c.Units[i].Name == name {
			return &c.Units[i]
		}
	}
	return nil
}
