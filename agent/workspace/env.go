//go:build unix

package workspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// EnvOptions are the inputs of the runtime's environment (interop §2.2).
type EnvOptions struct {
	WorkspaceID string
	// PlatformURL is what the runtime calls: the tenant, or the org-header
	// proxy in front of it. MOLECULE_URL gets the same value.
	PlatformURL string
	// HostIP is the host's private IPv4 (IMDS local-ipv4): the runtime
	// registers http://<HostIP>:<a2a.port>, so the tenant can reach it.
	HostIP string
	// AdapterModule is the adapter import path; "adapter" when empty.
	AdapterModule string
	// ConfigsDir holds config.yaml and .auth_token; both WORKSPACE_CONFIG_PATH
	// and CONFIGS_DIR point at it.
	ConfigsDir string
	// Home sets HOME (the runtime user's home) when not empty.
	Home string
	// User sets USER and LOGNAME (the runtime user's name) when not empty.
	User string
	// Secrets are the workspace secrets, passed as env (provider API keys...).
	Secrets map[string]secretstore.Secret
}

// Reserved are the variables Env sets itself; a workspace secret may not
// override them.
var Reserved = []string{"WORKSPACE_ID", "PLATFORM_URL", "MOLECULE_URL", "HOSTNAME", "ADAPTER_MODULE",
	"WORKSPACE_CONFIG_PATH", "CONFIGS_DIR", "HOME", "USER", "LOGNAME", "PATH", "PYTHONUNBUFFERED"}

// DefaultPath is the runtime's PATH when the unit's env sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Env returns the runtime's environment as KEY=VALUE pairs, sorted by key,
// secrets revealed. Errors name the option, never a secret value.
func Env(o EnvOptions) ([]string, error) {
	var errs []error
	if o.WorkspaceID == "" || strings.ContainsAny(o.WorkspaceID, " \t\r\n/") {
		errs = append(errs, fmt.Errorf("workspace id %q: want the workspace UUID", o.WorkspaceID))
	}
	if u, err := url.Parse(o.PlatformURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("platform url %q: want http(s)://host[:port]", o.PlatformURL))
	}
	if a, err := netip.ParseAddr(o.HostIP); err != nil || !a.Is4() {
		errs = append(errs, fmt.Errorf("host ip %q: want the host's private IPv4 address (IMDS local-ipv4)", o.HostIP))
	}
	if o.ConfigsDir == "" || !strings.HasPrefix(o.ConfigsDir, "/") {
		errs = append(errs, fmt.Errorf("configs dir %q: want an absolute path", o.ConfigsDir))
	}
	adapter := o.AdapterModule
	if adapter == "" {
		adapter = "adapter"
	}
	platform := strings.TrimRight(o.PlatformURL, "/")
	env := map[string]string{
		"WORKSPACE_ID": o.WorkspaceID, "PLATFORM_URL": platform, "MOLECULE_URL": platform,
		"HOSTNAME": o.HostIP, "ADAPTER_MODULE": adapter,
		"WORKSPACE_CONFIG_PATH": o.ConfigsDir, "CONFIGS_DIR": o.ConfigsDir,
		// Python block-buffers stdout when it is not a terminal: without
		// this the register result reaches the log only when the buffer
		// fills, and is lost when the runtime dies by SIGTERM
		// (docs/platform-contract.md §6).
		"PYTHONUNBUFFERED": "1",
	}
	if o.Home != "" {
		env["HOME"] = o.Home
	}
	if o.User != "" {
		env["USER"], env["LOGNAME"] = o.User, o.User
	}
	for k, v := range o.Secrets {
		switch {
		case !envName.MatchString(k):
			errs = append(errs, fmt.Errorf("workspace secret %q: not a valid environment variable name", k))
		case slices.Contains(Reserved, k):
			errs = append(errs, fmt.Errorf("workspace secret %s would override the runtime's own %s; rename it", k, k))
		default:
			env[k] = v.Reveal()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out, nil
}

// PickHostIP picks the address the runtime registers off EC2: the first
// private (RFC 1918) IPv4 of addrs. The tenant refuses loopback, TEST-NET,
// link-local and CGNAT runtime URLs, and a public address is not what it
// can reach in a VPC (docs/platform-contract.md §4), so without a private
// address it is an error naming workspace.host_ip.
func PickHostIP(addrs []net.Addr) (string, error) {
	var seen []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil {
			continue
		}
		if ipn.IP.IsPrivate() {
			return ipn.IP.String(), nil
		}
		if !ipn.IP.IsLoopback() {
			seen = append(seen, ipn.IP.String())
		}
	}
	return "", fmt.Errorf("no private (RFC 1918) IPv4 on this host (found %v); the tenant refuses loopback and "+
		"TEST-NET runtime URLs: set workspace.host_ip to the address the tenant reaches this host on", seen)
}
