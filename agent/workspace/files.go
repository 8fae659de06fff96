//go:build unix

package workspace

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// File names inside the configs dir, as the runtime reads them.
const (
	ConfigFile = "config.yaml"
	TokenFile  = ".auth_token"
	// DefaultPort is the runtime's default A2A port (a2a.port).
	DefaultPort = 8000
)

// RuntimeConfig is what goes into config.yaml: the minimal shape the tenant
// platform itself generates (workspace_provision.go), plus a2a.port.
type RuntimeConfig struct {
	Name        string
	Description string
	Tier        int
	Runtime     string // langgraph, claude-code, hermes, ...
	Model       string
	Port        int // a2a.port; DefaultPort when 0
}

// Validate checks the config; errors name the field under prefix (e.g.
// "workspace.config").
func (c RuntimeConfig) Validate(prefix string) error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"name", c.Name}, {"runtime", c.Runtime}} {
		if strings.TrimSpace(f.v) == "" {
			errs = append(errs, fmt.Errorf("%s.%s: required", prefix, f.name))
		}
	}
	if c.Tier < 0 {
		errs = append(errs, fmt.Errorf("%s.tier: %d is negative", prefix, c.Tier))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s.port: %d is not a TCP port", prefix, c.Port))
	}
	return errors.Join(errs...)
}

// port returns a2a.port.
func (c RuntimeConfig) port() int {
	if c.Port == 0 {
		return DefaultPort
	}
	return c.Port
}

type yamlConfig struct {
	Name          string         `yaml:"name"`
	Description   string         `yaml:"description"`
	Version       string         `yaml:"version"`
	Tier          int            `yaml:"tier"`
	Runtime       string         `yaml:"runtime"`
	Model         string         `yaml:"model"`
	RuntimeConfig *runtimeConfig `yaml:"runtime_config,omitempty"`
	A2A           a2a            `yaml:"a2a"`
}

type runtimeConfig struct {
	Timeout int `yaml:"timeout"`
}

type a2a struct {
	Port int `yaml:"port"`
}

// YAML renders config.yaml. Runtimes other than langgraph and deepagents get
// runtime_config: {timeout: 0}, as the platform writes it.
func (c RuntimeConfig) YAML() ([]byte, error) {
	y := yamlConfig{Name: c.Name, Description: c.Description, Version: "1.0.0", Tier: c.Tier,
		Runtime: c.Runtime, Model: c.Model, A2A: a2a{Port: c.port()}}
	if c.Runtime != "langgraph" && c.Runtime != "deepagents" {
		y.RuntimeConfig = &runtimeConfig{}
	}
	b, err := yaml.Marshal(y)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", ConfigFile, err)
	}
	return b, nil
}

// EnsureDir creates the configs dir (0750) and gives it to uid:gid (-1 keeps
// the agent's): the runtime writes an issued token there itself. A symlink
// in its path, or an existing dir owned by another user, is refused.
func EnsureDir(dir string, uid, gid int) error {
	if err := safefile.EnsureDir(dir, 0o750, uid, gid); err != nil {
		return fmt.Errorf("configs dir: %w", err)
	}
	return nil
}

// WriteConfig writes dir/config.yaml atomically, 0644, owned by uid:gid. The
// dir belongs to the runtime's user, so nothing touches the path after the
// rename (safefile).
func WriteConfig(dir string, c RuntimeConfig, uid, gid int) error {
	b, err := c.YAML()
	if err != nil {
		return err
	}
	return safefile.Write(dir, ConfigFile, b, 0o644, uid, gid)
}

// WriteToken writes dir/.auth_token atomically: the token on one line with no
// trailing newline (surrounding whitespace from the secret source is
// dropped), 0600, owned by uid:gid.
func WriteToken(dir string, token secretstore.Secret, uid, gid int) error {
	v := strings.TrimSpace(token.Reveal())
	if v == "" {
		return errors.New("workspace auth token is empty")
	}
	if strings.ContainsAny(v, "\r\n") {
		return errors.New("workspace auth token spans several lines; store the token alone in the parameter")
	}
	return secretstore.WriteFile(filepath.Join(dir, TokenFile), secretstore.New(v), uid, gid)
}
