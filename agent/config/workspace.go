//go:build unix

package config

import (
	"net"
	"path/filepath"
	"slices"
)

// The workspace runtime unit (builtin: workspace-runtime) and the names
// agent/workspace writes and reads (docs/platform-contract.md).
const (
	WorkspaceBuiltin = "workspace-runtime"
	// DefaultWorkspaceConfigsDir is workspace.configs_dir's default.
	DefaultWorkspaceConfigsDir = "/opt/configs"
	// WorkspaceTokenSecret is the secret holding the workspace auth token;
	// WorkspaceTokenFile the file in configs_dir the runtime reads it from.
	WorkspaceTokenSecret = "workspace-auth-token"
	WorkspaceTokenFile   = ".auth_token"
)

// workspaceReservedEnv are the variables the runtime's environment sets
// itself (agent/workspace Env); a workspace secret may not take their name.
var workspaceReservedEnv = []string{"WORKSPACE_ID", "PLATFORM_URL", "MOLECULE_URL", "HOSTNAME", "ADAPTER_MODULE",
	"WORKSPACE_CONFIG_PATH", "CONFIGS_DIR", "HOME"}

// applyWorkspace gives the workspace runtime unit what the workspace:
// section asks for, as ordinary unit config, so its secrets reach it like
// any unit's (resolved by the daemon's materializer, a rotation restarting
// it): the token file <configs_dir>/.auth_token holding
// secret:workspace-auth-token, unless the unit lists a file at that path
// itself (to set its owner, say), and each workspace secret as a secret:
// env reference, unless the unit's env sets that variable.
func (c *Config) applyWorkspace() {
	if c.Workspace.ConfigsDir == "" {
		c.Workspace.ConfigsDir = DefaultWorkspaceConfigsDir
	}
	for i := range c.Units {
		u := &c.Units[i]
		if u.Builtin != WorkspaceBuiltin {
			continue
		}
		tok := filepath.Join(c.Workspace.ConfigsDir, WorkspaceTokenFile)
		if !slices.ContainsFunc(u.Files, func(f File) bool { return f.Path == tok }) {
			u.Files = append(u.Files, File{Path: tok, Content: SecretPrefix + WorkspaceTokenSecret, Owner: OwnerUnit})
		}
		for env, name := range c.Workspace.Secrets {
			if u.Env == nil {
				u.Env = map[string]string{}
			}
			if _, set := u.Env[env]; !set {
				u.Env[env] = SecretPrefix + name
			}
		}
	}
}

// Workspace configures a workspace host's runtime (role: workspace). None of
// it is secret: the auth token and workspace secrets come from the secrets
// source.
type Workspace struct {
	// ID is the workspace's UUID (WORKSPACE_ID).
	ID string `yaml:"id"`
	// PlatformURL is the tenant platform the runtime registers with.
	PlatformURL string `yaml:"platform_url"`
	// OrgID is the tenant's MOLECULE_ORG_ID, sent as X-Molecule-Org-Id.
	OrgID string `yaml:"org_id"`
	// HostIP is the address the runtime registers (HOSTNAME); default: the
	// private IPv4 from IMDS.
	HostIP        string `yaml:"host_ip"`
	Name          string `yaml:"name"`
	Description   string `yaml:"description"`
	Tier          int    `yaml:"tier"`
	Runtime       string `yaml:"runtime"`
	Model         string `yaml:"model"`
	Port          int    `yaml:"port"`
	AdapterModule string `yaml:"adapter_module"`
	// ConfigsDir holds config.yaml and .auth_token (default /opt/configs).
	ConfigsDir string `yaml:"configs_dir"`
	// Secrets names secrets passed to the runtime as env, NAME: secret-name.
	Secrets map[string]string `yaml:"secrets"`
	// LogPath receives the runtime's output, rotated (default /var/log/molecule-runtime.log).
	LogPath string `yaml:"log_path"`
	// CheckInterval is how often the tenant is asked whether the workspace
	// is registered, once it is (default 30s).
	CheckInterval Duration `yaml:"check_interval"`
	// Proxy runs a loopback proxy that adds X-Molecule-Org-Id to the runtime's calls.
	Proxy WorkspaceProxy `yaml:"proxy"`
}

// WorkspaceProxy configures the org-header proxy.
type WorkspaceProxy struct {
	Enabled bool   `yaml:"enabled"`
	Listen  string `yaml:"listen"` // default 127.0.0.1:8081
}

func (w *Workspace) validate() error {
	if w.PlatformURL != "" {
		if err := checkURL(w.PlatformURL); err != nil {
			return fieldErr("workspace.platform_url", "%v", err)
		}
	}
	if w.HostIP != "" && net.ParseIP(w.HostIP) == nil {
		return fieldErr("workspace.host_ip", "%q is not an IP address", w.HostIP)
	}
	if w.CheckInterval.Duration < 0 {
		return fieldErr("workspace.check_interval", "must be positive")
	}
	if w.Port < 0 || w.Port > 65535 {
		return fieldErr("workspace.port", "%d is not a TCP port", w.Port)
	}
	if w.ConfigsDir != "" && !filepath.IsAbs(w.ConfigsDir) {
		return fieldErr("workspace.configs_dir", "must be an absolute path")
	}
	if w.LogPath != "" && !filepath.IsAbs(w.LogPath) {
		return fieldErr("workspace.log_path", "must be an absolute path")
	}
	for k, v := range w.Secrets {
		if !envKeyRe.MatchString(k) {
			return fieldErr("workspace.secrets."+k, "is not a valid environment variable name")
		}
		if !secretNameRe.MatchString(v) {
			return fieldErr("workspace.secrets."+k, "%q is not a secret name", v)
		}
		if slices.Contains(workspaceReservedEnv, k) {
			return fieldErr("workspace.secrets."+k, "would override the runtime's own %s; rename it", k)
		}
	}
	if w.Proxy.Listen != "" {
		host, _, err := net.SplitHostPort(w.Proxy.Listen)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fieldErr("workspace.proxy.listen", "%q must be a loopback host:port", w.Proxy.Listen)
		}
	}
	return nil
}
