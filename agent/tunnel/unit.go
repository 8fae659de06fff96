//go:build unix

package tunnel

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
)

// Defaults for the built-in cloudflared unit.
const (
	// Builtin is the config.Unit.Builtin value of the cloudflared unit.
	Builtin = "cloudflared"
	// DefaultUnitName is the unit's name in status and heartbeats.
	DefaultUnitName = "cloudflared"
	// DefaultBinary is where packaging installs the pinned cloudflared.
	DefaultBinary = "/usr/local/bin/cloudflared"
	// DefaultMetricsPort is cloudflared's own first default metrics port.
	DefaultMetricsPort = 20241
	// DefaultGracePeriod is cloudflared's own --grace-period default.
	DefaultGracePeriod = 30 * time.Second
	// DefaultSecretName is the SSM parameter (relative to the host's prefix)
	// that holds the tunnel token.
	DefaultSecretName = "tunnel-token"
	// TokenEnv is the variable cloudflared reads the token from. Beware: on
	// a usage error cloudflared prints its help with this variable's value
	// as the --token default, so the unit's output must be redacted or its
	// arguments right (the real-binary tests check they are).
	TokenEnv = "TUNNEL_TOKEN"
	// ExitUsage is cloudflared's exit code for a usage error, which includes
	// "Provided Tunnel token is not valid.": restarting cannot fix it.
	ExitUsage = 255
	// stopMargin is added to the grace period before the agent's SIGKILL, so
	// cloudflared can finish its own graceful shutdown first.
	stopMargin = 5 * time.Second
)

// UnitOptions configure the built-in cloudflared unit; zero fields take the defaults.
type UnitOptions struct {
	// Name of the unit; DefaultUnitName when empty.
	Name string
	// Binary is the cloudflared executable; DefaultBinary when empty.
	Binary string
	// MetricsPort is the loopback port of /ready and /metrics; DefaultMetricsPort when 0.
	MetricsPort int
	// GracePeriod bounds cloudflared's own graceful shutdown; DefaultGracePeriod when 0.
	GracePeriod time.Duration
	// SecretName is the secret holding the token; DefaultSecretName when empty.
	SecretName string
	// Edge overrides cloudflared's edge addresses (host:port). For tests only:
	// an unreachable edge keeps cloudflared running without connections.
	Edge []string
	// After lists units cloudflared starts after (e.g. the platform it exposes).
	After []string
}

// MetricsAddr is the loopback address the metrics server binds.
func (o UnitOptions) MetricsAddr() string {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(o.metricsPort())).String()
}

func (o UnitOptions) metricsPort() int {
	if o.MetricsPort == 0 {
		return DefaultMetricsPort
	}
	return o.MetricsPort
}

// Unit returns the cloudflared exec unit:
//
//	cloudflared tunnel --no-autoupdate --metrics 127.0.0.1:<port> --grace-period <d> [--edge <addr>]... run
//
// with TUNNEL_TOKEN=secret:<name> in its environment (never argv), a /ready
// probe expecting 200, exit code 255 as do-not-restart, and a stop grace a
// little longer than cloudflared's own grace period.
func (o UnitOptions) Unit() (config.Unit, error) {
	name, bin, secret, grace := o.Name, o.Binary, o.SecretName, o.GracePeriod
	if name == "" {
		name = DefaultUnitName
	}
	if bin == "" {
		bin = DefaultBinary
	}
	if secret == "" {
		secret = DefaultSecretName
	}
	if grace == 0 {
		grace = DefaultGracePeriod
	}
	port := o.metricsPort()
	switch {
	case port < 1 || port > 65535:
		return config.Unit{}, fmt.Errorf("cloudflared metrics port %d: must be 1-65535", port)
	case grace < time.Second:
		return config.Unit{}, fmt.Errorf("cloudflared grace period %v: must be at least 1s", grace)
	}
	for _, e := range o.Edge {
		if _, err := netip.ParseAddrPort(e); err != nil {
			return config.Unit{}, fmt.Errorf("cloudflared edge %q: want ip:port", e)
		}
	}
	// --edge is a "tunnel" flag: cloudflared rejects it after "run".
	args := []string{"tunnel", "--no-autoupdate", "--metrics", o.MetricsAddr(), "--grace-period", grace.String()}
	for _, e := range o.Edge {
		args = append(args, "--edge", e)
	}
	args = append(args, "run")
	return config.Unit{
		Name:    name,
		Kind:    config.KindExec,
		Builtin: Builtin,
		Command: bin,
		Args:    args,
		Env:     map[string]string{TokenEnv: config.SecretPrefix + secret},
		After:   o.After,
		Ready: &config.Probe{
			HTTP:   o.ReadyURL(),
			Status: 200,
		},
		Stop: config.Stop{Signal: "SIGTERM", Grace: config.D(grace + stopMargin)},
		Restart: config.Restart{
			NoRestartExitCodes: []int{ExitUsage},
		},
	}, nil
}

// ReadyURL is the /ready endpoint of a unit built with these options.
func (o UnitOptions) ReadyURL() string { return "http://" + o.MetricsAddr() + "/ready" }
