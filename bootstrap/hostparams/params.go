// Package hostparams holds what a host is told at boot: the parameters of
// `molecule-agent bootstrap`, the instance tags they come from, and the
// one-line EC2 user-data that carries them (RenderUserData refuses any value
// that looks like a secret). It imports only the standard library, so the
// control plane's provisioner renders the same user-data bootstrap reads
// without linking the agent.
package hostparams

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
)

// Identity modes, as in agent.yaml's identity.mode.
const (
	IdentityIMDS       = "imds"
	IdentityEnrollment = "enrollment"
)

// Defaults for Params.
const (
	DefaultChannel             = "stable"
	DefaultEnrollmentTokenFile = "/etc/molecule-agent/enrollment-token"
)

// Instance tag keys read through IMDS when the matching flag is absent
// (the instance must have "Allow tags in instance metadata" enabled).
const (
	TagRole      = "molecule:role"
	TagOrg       = "molecule:org"
	TagWorkspace = "molecule:workspace"
	// TagOrgID is the tenant's MOLECULE_ORG_ID (not the slug of TagOrg):
	// a workspace host sends it as X-Molecule-Org-Id.
	TagOrgID        = "molecule:org-id"
	TagControlPlane = "molecule:control-plane"
	TagSSMPrefix    = "molecule:ssm-prefix"
	TagChannel      = "molecule:channel"
	TagPlatformURL  = "molecule:platform-url"
)

// Params are what a host is told at boot. None of them is a secret.
type Params struct {
	// Role is "tenant" or "workspace".
	Role string
	// Org is the tenant's slug, e.g. "acme".
	Org string
	// Workspace is the workspace ID (workspace hosts only).
	Workspace string
	// OrgID is the tenant platform's MOLECULE_ORG_ID (workspace hosts):
	// its TenantGuard answers 404 to calls without it as X-Molecule-Org-Id.
	OrgID string
	// PlatformURL is the tenant platform a workspace runtime registers
	// with (workspace hosts only).
	PlatformURL string
	// ControlPlane is the control plane's base URL; empty for none. It is
	// https:// unless it is a loopback address.
	ControlPlane string
	// ControlPlaneCA is a PEM file on the instance (baked into the AMI or
	// placed by the provisioner) holding the private CA that signs the
	// control plane's certificate; empty: the system's CAs.
	ControlPlaneCA string
	// SSMPrefix is the host's SSM parameter path; empty for no secrets.
	SSMPrefix string
	// Channel is the image channel ("stable", "staging").
	Channel string
	// Region is the AWS region for SSM; from IMDS when empty.
	Region string
	// SSMEndpoint overrides the SSM endpoint (a VPC endpoint); it is
	// written to agent.yaml too, so the agent uses the same one.
	SSMEndpoint string
	// Identity is how the agent proves itself: "imds" (default) or
	// "enrollment" (off EC2, with a token file placed by the provisioner).
	Identity string
	// EnrollmentTokenFile is the token's path in enrollment mode.
	EnrollmentTokenFile string
	// UnitsFile is an optional YAML file (e.g. baked into the AMI) whose
	// `units:` list is copied into agent.yaml.
	UnitsFile string
}

var (
	roleRE      = regexp.MustCompile(`^(tenant|workspace)$`)
	slugRE      = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	workspaceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)
	channelRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	regionRE    = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)
	ssmPathRE   = regexp.MustCompile(`^(/[A-Za-z0-9_.-]+)+$`)
	filePathRE  = regexp.MustCompile(`^(/[A-Za-z0-9_.@+-]+)+$`)
)

// WithDefaults fills Channel, Identity and EnrollmentTokenFile.
func (p Params) WithDefaults() Params {
	if p.Channel == "" {
		p.Channel = DefaultChannel
	}
	if p.Identity == "" {
		p.Identity = IdentityIMDS
	}
	if p.Identity == IdentityEnrollment && p.EnrollmentTokenFile == "" {
		p.EnrollmentTokenFile = DefaultEnrollmentTokenFile
	}
	p.SSMPrefix = strings.TrimSuffix(p.SSMPrefix, "/")
	return p
}

// Validate checks every field; errors name the flag.
func (p Params) Validate() error {
	var errs []error
	bad := func(flag, format string, a ...any) {
		errs = append(errs, fmt.Errorf("--%s: "+format, append([]any{flag}, a...)...))
	}
	if !roleRE.MatchString(p.Role) {
		bad("role", "%q is not a role; use tenant or workspace (or tag the instance %s)", p.Role, TagRole)
	}
	if !slugRE.MatchString(p.Org) {
		bad("org", "%q is not an org slug (lowercase letters, digits, dashes)", p.Org)
	}
	switch {
	case p.Role == "workspace" && p.Workspace == "":
		bad("workspace", "a workspace host needs its workspace ID")
	case p.Workspace != "" && !workspaceRE.MatchString(p.Workspace):
		bad("workspace", "%q is not a workspace ID (letters, digits, _ and -)", p.Workspace)
	}
	if p.OrgID != "" && !workspaceRE.MatchString(p.OrgID) {
		bad("org-id", "%q is not an org ID (letters, digits, _ and -)", p.OrgID)
	}
	switch {
	case p.Role == "workspace" && p.PlatformURL == "":
		bad("platform-url", "a workspace host needs its tenant platform's URL")
	case p.PlatformURL != "":
		if err := checkControlPlaneURL(p.PlatformURL); err != nil {
			bad("platform-url", "%v", err)
		}
	}
	if p.ControlPlane != "" {
		if err := checkControlPlaneURL(p.ControlPlane); err != nil {
			bad("control-plane", "%v", err)
		} else if err := requireTLS(p.ControlPlane); err != nil {
			bad("control-plane", "%v", err)
		}
	}
	switch {
	case p.ControlPlaneCA != "" && p.ControlPlane == "":
		bad("control-plane-ca", "needs --control-plane")
	case p.ControlPlaneCA != "" && !filePathRE.MatchString(p.ControlPlaneCA):
		bad("control-plane-ca", "%q is not an absolute path", p.ControlPlaneCA)
	}
	if p.SSMPrefix != "" && !ssmPathRE.MatchString(p.SSMPrefix) {
		bad("ssm-prefix", "%q is not an SSM path like /molecule/prod/tenants/acme", p.SSMPrefix)
	}
	if p.Channel != "" && !channelRE.MatchString(p.Channel) {
		bad("channel", "%q is not a channel name (lowercase letters, digits, dashes)", p.Channel)
	}
	if p.SSMEndpoint != "" {
		if err := checkControlPlaneURL(p.SSMEndpoint); err != nil {
			bad("ssm-endpoint", "%v", err)
		}
	}
	if p.Region != "" && !regionRE.MatchString(p.Region) {
		bad("region", "%q is not an AWS region like us-east-2", p.Region)
	}
	switch p.Identity {
	case "", IdentityIMDS:
	case IdentityEnrollment:
		if p.EnrollmentTokenFile != "" && !filePathRE.MatchString(p.EnrollmentTokenFile) {
			bad("enrollment-token-file", "%q is not an absolute path", p.EnrollmentTokenFile)
		}
		if p.SSMPrefix != "" && p.Region == "" {
			bad("region", "needed with --ssm-prefix off EC2 (no IMDS to ask)")
		}
	default:
		bad("identity", "%q: use imds or enrollment", p.Identity)
	}
	if p.UnitsFile != "" && !filePathRE.MatchString(p.UnitsFile) {
		bad("units-file", "%q is not an absolute path", p.UnitsFile)
	}
	return errors.Join(errs...)
}

func checkControlPlaneURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL: %v", redactURLError(err))
	}
	switch {
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%q: use an https:// URL", u.Redacted())
	case u.Host == "":
		return fmt.Errorf("%q has no host", u.Redacted())
	case u.User != nil:
		return errors.New("must not carry credentials (user:password@): the agent proves itself with its identity")
	case u.RawQuery != "" || u.Fragment != "":
		return fmt.Errorf("%q: drop the query and fragment", u.Redacted())
	}
	return nil
}

// requireTLS refuses a plain-HTTP control plane that is not on loopback:
// the host token would cross the network in clear.
func requireTLS(s string) error {
	u, _ := url.Parse(s)
	if u.Scheme == "https" {
		return nil
	}
	if h := u.Hostname(); h == "localhost" || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is plain HTTP off loopback: use https:// (and --control-plane-ca for a private CA)", u.Redacted())
}

// redactURLError drops the URL url.Parse quotes in its error, which could
// hold credentials.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Flags returns the bootstrap flags for p, in a fixed order, skipping
// empty and default values.
func (p Params) Flags() [][2]string {
	var f [][2]string
	add := func(name, v string) {
		if v != "" {
			f = append(f, [2]string{name, v})
		}
	}
	add("role", p.Role)
	add("org", p.Org)
	add("workspace", p.Workspace)
	add("org-id", p.OrgID)
	add("platform-url", p.PlatformURL)
	add("control-plane", p.ControlPlane)
	add("control-plane-ca", p.ControlPlaneCA)
	add("ssm-prefix", p.SSMPrefix)
	if p.Channel != DefaultChannel {
		add("channel", p.Channel)
	}
	add("region", p.Region)
	add("ssm-endpoint", p.SSMEndpoint)
	if p.Identity != IdentityIMDS {
		add("identity", p.Identity)
	}
	if p.EnrollmentTokenFile != DefaultEnrollmentTokenFile {
		add("enrollment-token-file", p.EnrollmentTokenFile)
	}
	add("units-file", p.UnitsFile)
	return f
}

// FromTags fills empty fields of p from instance tags.
func (p Params) FromTags(tags map[string]string) Params {
	fill := func(dst *string, key string) {
		if *dst == "" {
			*dst = tags[key]
		}
	}
	fill(&p.Role, TagRole)
	fill(&p.Org, TagOrg)
	fill(&p.Workspace, TagWorkspace)
	fill(&p.OrgID, TagOrgID)
	fill(&p.PlatformURL, TagPlatformURL)
	fill(&p.ControlPlane, TagControlPlane)
	fill(&p.SSMPrefix, TagSSMPrefix)
	fill(&p.Channel, TagChannel)
	return p
}

// NeedsTags reports whether a required parameter is missing, so the
// instance tags must be read.
func (p Params) NeedsTags() bool { return p.Role == "" || p.Org == "" }
