//go:build unix

package bootstrap

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

// agentYAML is the part of agent.yaml bootstrap writes.
type agentYAML struct {
	Role         string         `yaml:"role"`
	Secrets      secretsYAML    `yaml:"secrets"`
	Identity     identityYAML   `yaml:"identity"`
	ControlPlane controlYAML    `yaml:"control_plane"`
	Workspace    *workspaceYAML `yaml:"workspace,omitempty"`
	Units        *yaml.Node     `yaml:"units,omitempty"`
}

type secretsYAML struct {
	Source   string `yaml:"source"`
	Prefix   string `yaml:"prefix,omitempty"`
	Region   string `yaml:"region,omitempty"`
	Endpoint string `yaml:"endpoint,omitempty"`
}

type identityYAML struct {
	Mode               string `yaml:"mode"`
	EnrollmentToken    string `yaml:"enrollment_token,omitempty"`
	WatchInterruptions bool   `yaml:"watch_interruptions"`
}

type workspaceYAML struct {
	ID          string              `yaml:"id"`
	PlatformURL string              `yaml:"platform_url"`
	OrgID       string              `yaml:"org_id,omitempty"`
	Proxy       *workspaceProxyYAML `yaml:"proxy,omitempty"`
}

// workspaceProxyYAML turns on the loopback proxy adding X-Molecule-Org-Id
// to the runtime's calls (the runtime never sends it).
type workspaceProxyYAML struct {
	Enabled bool `yaml:"enabled"`
}

type controlYAML struct {
	URL       string `yaml:"url"`
	CAFile    string `yaml:"ca_file,omitempty"`
	Org       string `yaml:"org"`
	Workspace string `yaml:"workspace,omitempty"`
	Channel   string `yaml:"channel"`
}

const configHeader = `# Written by ` + "`molecule-agent bootstrap`" + `; it holds no secrets (those come from
# SSM at run time). Edits are replaced on the next bootstrap: change the
# bootstrap flags or instance tags instead.
`

// RenderConfig returns agent.yaml for p (already resolved: Region set when
// SSMPrefix is). units is the YAML of the units file, or nil. The result
// is checked with the agent's own config parser.
func RenderConfig(p Params, units []byte) ([]byte, error) {
	c := agentYAML{Role: p.Role,
		Identity:     identityYAML{Mode: p.Identity},
		ControlPlane: controlYAML{URL: p.ControlPlane, CAFile: p.ControlPlaneCA, Org: p.Org, Workspace: p.Workspace, Channel: p.Channel}}
	if p.Role == "workspace" {
		c.Workspace = &workspaceYAML{ID: p.Workspace, PlatformURL: p.PlatformURL, OrgID: p.OrgID}
		if p.OrgID != "" {
			c.Workspace.Proxy = &workspaceProxyYAML{Enabled: true}
		}
	}
	if p.SSMPrefix != "" {
		c.Secrets = secretsYAML{Source: "ssm", Prefix: p.SSMPrefix, Region: p.Region, Endpoint: p.SSMEndpoint}
	}
	switch p.Identity {
	case IdentityEnrollment:
		c.Identity.EnrollmentToken = "file:" + p.EnrollmentTokenFile
	default:
		c.Identity.WatchInterruptions = true
	}
	if units != nil {
		n, err := unitsNode(units)
		if err != nil {
			return nil, fmt.Errorf("--units-file: %w", err)
		}
		c.Units = n
	}
	var b bytes.Buffer
	b.WriteString(configHeader)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("render agent.yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render agent.yaml: %w", err)
	}
	if _, err := config.Parse(bytes.NewReader(b.Bytes())); err != nil {
		return nil, fmt.Errorf("rendered agent.yaml is invalid: %w", err)
	}
	return b.Bytes(), nil
}

// unitsNode returns the `units:` sequence of a units file.
func unitsNode(data []byte) (*yaml.Node, error) {
	var doc struct {
		Units yaml.Node `yaml:"units"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("want a YAML file with only a units: list: %w", err)
	}
	if doc.Units.Kind != yaml.SequenceNode {
		return nil, errors.New("units: must be a list")
	}
	return &doc.Units, nil
}

// writeIfChanged writes data to path (0644, atomically) unless the file
// already holds exactly data. It reports whether it wrote.
func writeIfChanged(path string, data []byte, mode os.FileMode) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}
