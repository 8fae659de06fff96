//go:build unix

// Package bootstrap turns a fresh EC2 instance into a running, registered
// molecule host: it is `molecule-agent bootstrap`, what the one-line
// user-data runs. It resolves the host's parameters (flags, else instance
// tags through IMDSv2), checks them (one SSM read of the prefix so an IAM
// mistake shows at boot), writes /etc/molecule-agent/agent.yaml (no
// secrets) only when it changed, installs and starts the systemd service
// through kardianos/service with the unit from packaging/systemd, and waits
// for the agent to register and its units to be ready, printing one line
// per phase. Running it again on a booted host changes nothing.
//
// The parameters, their tags and the user-data renderer live in
// bootstrap/hostparams, which the control plane's provisioner shares.
package bootstrap

import "github.com/molecule-ai/molecule-agent/bootstrap/hostparams"

// Params are what a host is told at boot (hostparams.Params).
type Params = hostparams.Params

// Identity modes, defaults and instance tag keys, as in hostparams.
const (
	IdentityIMDS               = hostparams.IdentityIMDS
	IdentityEnrollment         = hostparams.IdentityEnrollment
	DefaultChannel             = hostparams.DefaultChannel
	DefaultEnrollmentTokenFile = hostparams.DefaultEnrollmentTokenFile
	TagRole                    = hostparams.TagRole
	TagOrg                     = hostparams.TagOrg
	TagWorkspace               = hostparams.TagWorkspace
	TagOrgID                   = hostparams.TagOrgID
	TagControlPlane            = hostparams.TagControlPlane
	TagSSMPrefix               = hostparams.TagSSMPrefix
	TagChannel                 = hostparams.TagChannel
	TagPlatformURL             = hostparams.TagPlatformURL
	AgentPath                  = hostparams.AgentPath
)

// RenderUserData returns the EC2 user-data that boots a host with p
// (hostparams.RenderUserData).
func RenderUserData(p Params) (string, error) { return hostparams.RenderUserData(p) }

// LooksSecret reports whether v looks like a credential, and why
// (hostparams.LooksSecret).
func LooksSecret(v string) (reason string, ok bool) { return hostparams.LooksSecret(v) }

// ShellQuote quotes s for a POSIX shell (hostparams.ShellQuote).
func ShellQuote(s string) string { return hostparams.ShellQuote(s) }
