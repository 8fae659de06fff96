//go:build unix

package config

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/distribution/reference"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Update policies of a container unit.
const (
	// UpdateAuto applies the control plane's desired image digests.
	UpdateAuto = "auto"
	// UpdateNever keeps the configured image; the default for stateful
	// units (those with volumes), such as postgres and redis.
	UpdateNever = "never"
)

// Container holds the settings of a kind: container unit. Its env, stop
// signal and grace, readiness probe and restart policy are the unit's.
type Container struct {
	// Image is a reference, by tag ("postgres:16") or pinned by digest
	// ("ghcr.io/org/app@sha256:…"). Desired state from the control plane
	// overrides it, and must be pinned by digest.
	Image string `yaml:"image"`
	// Volumes are named volumes, "name:/path" or "name:/path:ro". The agent
	// creates missing ones and never removes any.
	Volumes []string `yaml:"volumes"`
	// Ports publish container ports: "[hostIP:]hostPort:containerPort[/tcp|/udp]".
	// hostIP may be ${PRIVATE_IP}: the instance's private IPv4 (IMDS
	// local-ipv4), resolved when the unit starts. Without hostIP the port is
	// on every address of the host.
	Ports []string `yaml:"ports"`
	// Network is a user-defined network (created when missing; the unit's
	// name is its DNS alias there), or "bridge", "host" or "none".
	Network string `yaml:"network"`
	// Cmd replaces the image's CMD. It is argv: never a secret.
	Cmd []string `yaml:"cmd"`
	// User is "user", "uid" or "uid:gid" inside the container.
	User string `yaml:"user"`
	// Healthcheck is the Docker healthcheck, shown by docker ps and usable
	// as the unit's readiness.
	Healthcheck *Healthcheck `yaml:"healthcheck"`
	// Update is "auto" or "never"; default never with volumes, else auto.
	Update string `yaml:"update"`
	// OnAgentExit is "keep" (default: the container goes on serving while
	// the agent restarts or is upgraded, and is adopted when it is back) or
	// "stop". A deprovisioned or interrupted host stops it either way.
	OnAgentExit string `yaml:"on_agent_exit"`
	// RegistryAuth names the secret holding the registry credentials for a
	// private image: a Docker config.json ({"auths":{…}}) or "user:token".
	RegistryAuth string `yaml:"registry_auth"`
	// SecretFiles pass secrets as read-only 0400 files instead of env, for
	// images that read *_FILE variables (see SecretFile).
	SecretFiles []SecretFile `yaml:"secret_files"`
}

// Healthcheck is a Docker container healthcheck.
type Healthcheck struct {
	// Test is ["CMD", "prog", "arg"…], ["CMD-SHELL", "command"] or ["NONE"].
	Test        []string `yaml:"test"`
	Interval    Duration `yaml:"interval"`
	Timeout     Duration `yaml:"timeout"`
	StartPeriod Duration `yaml:"start_period"`
	Retries     int      `yaml:"retries"`
}

// VolumeMount is a parsed Container.Volumes entry.
type VolumeMount struct {
	Name     string
	Path     string
	ReadOnly bool
}

// HostPrivateIP is the ports variable for the instance's private IPv4.
const HostPrivateIP = "PRIVATE_IP"

// PortBinding is a parsed Container.Ports entry. HostIP is empty for all
// addresses; HostIPFrom names the variable it is resolved from at start
// (HostPrivateIP), HostIP then being empty until resolved.
type PortBinding struct {
	HostIP        string
	HostIPFrom    string `json:",omitempty"`
	HostPort      uint16
	ContainerPort uint16
	Proto         string // "tcp" or "udp"
}

var (
	volumeNameRe  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	networkNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)
	userRe        = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,63}(:[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,63})?$`)
)

// UpdatePolicy returns Update with its default applied.
func (c *Container) UpdatePolicy() string {
	if c.Update != "" {
		return c.Update
	}
	if len(c.Volumes) > 0 {
		return UpdateNever
	}
	return UpdateAuto
}

// Mounts parses Volumes; call it on a validated Container.
func (c *Container) Mounts() []VolumeMount {
	out := make([]VolumeMount, 0, len(c.Volumes))
	for _, v := range c.Volumes {
		if m, err := ParseVolume(v); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// Bindings parses Ports; call it on a validated Container.
func (c *Container) Bindings() []PortBinding {
	out := make([]PortBinding, 0, len(c.Ports))
	for _, p := range c.Ports {
		if b, err := ParsePort(p); err == nil {
			out = append(out, b)
		}
	}
	return out
}

// ParseVolume parses "name:/path[:ro|:rw]".
func ParseVolume(s string) (VolumeMount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return VolumeMount{}, fmt.Errorf("%q is not name:/path or name:/path:ro", s)
	}
	m := VolumeMount{Name: parts[0], Path: parts[1]}
	if !volumeNameRe.MatchString(m.Name) {
		return VolumeMount{}, fmt.Errorf("%q is not a volume name (letters, digits, _ . -; host paths are not allowed)", m.Name)
	}
	if !path.IsAbs(m.Path) || path.Clean(m.Path) != m.Path || m.Path == "/" {
		return VolumeMount{}, fmt.Errorf("%q must be a clean absolute path other than /", m.Path)
	}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			m.ReadOnly = true
		case "rw":
		default:
			return VolumeMount{}, fmt.Errorf("%q is not a mount option; use ro or rw", parts[2])
		}
	}
	return m, nil
}

// ParsePort parses "[hostIP:]hostPort:containerPort[/tcp|/udp]"; an IPv6
// host address goes in brackets.
func ParsePort(s string) (PortBinding, error) {
	b := PortBinding{Proto: "tcp"}
	rest := s
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		b.Proto = rest[i+1:]
		rest = rest[:i]
		if b.Proto != "tcp" && b.Proto != "udp" {
			return PortBinding{}, fmt.Errorf("%q: protocol must be tcp or udp", s)
		}
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return PortBinding{}, fmt.Errorf("%q is not [hostIP:]hostPort:containerPort", s)
	}
	cp, err := parsePortNumber(rest[i+1:])
	if err != nil {
		return PortBinding{}, fmt.Errorf("%q: container port %w", s, err)
	}
	b.ContainerPort = cp
	rest = rest[:i]
	if v, ok := strings.CutPrefix(rest, "${"); ok {
		name, after, ok := strings.Cut(v, "}:")
		if !ok || name != HostPrivateIP {
			return PortBinding{}, fmt.Errorf("%q: the only host address variable is ${%s}", s, HostPrivateIP)
		}
		b.HostIPFrom, rest = name, after
	} else if j := strings.LastIndexByte(rest, ':'); j >= 0 && !strings.HasSuffix(rest, "]") {
		host := strings.TrimSuffix(strings.TrimPrefix(rest[:j], "["), "]")
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.Zone() != "" {
			return PortBinding{}, fmt.Errorf("%q: %q is not an IP address", s, rest[:j])
		}
		b.HostIP = ip.String()
		rest = rest[j+1:]
	}
	hp, err := parsePortNumber(rest)
	if err != nil {
		return PortBinding{}, fmt.Errorf("%q: host port %w", s, err)
	}
	b.HostPort = hp
	return b, nil
}

func parsePortNumber(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

// IsDigestPinned reports whether image is pinned by a sha256 digest
// ("repo@sha256:<64 hex>"): api.IsDigestPinned, the one digest-pin rule the
// control plane applies too.
func IsDigestPinned(image string) bool { return api.IsDigestPinned(image) }

func (c *Container) validate(p string) error {
	switch c.OnAgentExit {
	case "", "keep", "stop":
	default:
		return fieldErr(p+".on_agent_exit", "%q: use keep or stop", c.OnAgentExit)
	}
	if c.Image == "" {
		return fieldErr(p+".image", "is required (e.g. postgres:16 or ghcr.io/org/app@sha256:…)")
	}
	if _, err := reference.ParseNormalizedNamed(c.Image); err != nil {
		return fieldErr(p+".image", "%q is not an image reference: %v", c.Image, err)
	}
	targets := map[string]int{}
	for i, v := range c.Volumes {
		m, err := ParseVolume(v)
		if err != nil {
			return fieldErr(fmt.Sprintf("%s.volumes[%d]", p, i), "%v", err)
		}
		if j, dup := targets[m.Path]; dup {
			return fieldErr(fmt.Sprintf("%s.volumes[%d]", p, i), "path %s is already mounted by volumes[%d]", m.Path, j)
		}
		targets[m.Path] = i
	}
	if err := c.validatePorts(p); err != nil {
		return err
	}
	for i, a := range c.Cmd {
		if strings.Contains(a, SecretPrefix) {
			return fieldErr(fmt.Sprintf("%s.cmd[%d]", p, i), "secret references are not allowed in cmd (argv is visible to docker inspect and ps); pass the secret in env")
		}
	}
	if c.User != "" && !userRe.MatchString(c.User) {
		return fieldErr(p+".user", "%q is not user, uid or uid:gid", c.User)
	}
	if h := c.Healthcheck; h != nil {
		if err := h.validate(p + ".healthcheck"); err != nil {
			return err
		}
	}
	switch c.Update {
	case "", UpdateAuto, UpdateNever:
	default:
		return fieldErr(p+".update", "%q is not a policy; use auto or never", c.Update)
	}
	if c.RegistryAuth != "" && !secretNameRe.MatchString(strings.TrimPrefix(c.RegistryAuth, SecretPrefix)) {
		return fieldErr(p+".registry_auth", "%q is not a secret name (e.g. ghcr-auth)", c.RegistryAuth)
	}
	return nil
}

func (c *Container) validatePorts(p string) error {
	switch c.Network {
	case "", "bridge", "none":
	case "host":
		if len(c.Ports) > 0 {
			return fieldErr(p+".ports", "cannot publish ports with network: host (the container uses the host's ports directly)")
		}
	default:
		if !networkNameRe.MatchString(c.Network) {
			return fieldErr(p+".network", "%q is not a network name", c.Network)
		}
	}
	if c.Network == "none" && len(c.Ports) > 0 {
		return fieldErr(p+".ports", "cannot publish ports with network: none")
	}
	seen := map[string]int{}
	for i, s := range c.Ports {
		b, err := ParsePort(s)
		if err != nil {
			return fieldErr(fmt.Sprintf("%s.ports[%d]", p, i), "%v", err)
		}
		key := fmt.Sprintf("%s%s:%d/%s", b.HostIP, b.HostIPFrom, b.HostPort, b.Proto)
		if j, dup := seen[key]; dup {
			return fieldErr(fmt.Sprintf("%s.ports[%d]", p, i), "host port %s is already bound by ports[%d]", key, j)
		}
		seen[key] = i
	}
	return nil
}

func (h *Healthcheck) validate(p string) error {
	if len(h.Test) == 0 {
		return fieldErr(p+".test", "is required (e.g. [CMD-SHELL, \"pg_isready -U postgres\"])")
	}
	switch h.Test[0] {
	case "NONE":
	case "CMD", "CMD-SHELL":
		if len(h.Test) < 2 {
			return fieldErr(p+".test", "%s needs a command after it", h.Test[0])
		}
	default:
		return fieldErr(p+".test[0]", "%q must be CMD, CMD-SHELL or NONE", h.Test[0])
	}
	for i, a := range h.Test {
		if strings.Contains(a, SecretPrefix) {
			return fieldErr(fmt.Sprintf("%s.test[%d]", p, i), "secret references are not allowed in a healthcheck command")
		}
	}
	if h.Interval.Duration < 0 || h.Timeout.Duration < 0 || h.StartPeriod.Duration < 0 {
		return fieldErr(p, "interval, timeout and start_period must not be negative")
	}
	if h.Retries < 0 {
		return fieldErr(p+".retries", "must not be negative")
	}
	return nil
}
