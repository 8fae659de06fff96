//go:build unix

package bootstrap

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// Defaults for Options.
const (
	DefaultConfigPath = "/etc/molecule-agent/agent.yaml"
	DefaultTimeout    = 10 * time.Minute
	DefaultPoll       = 200 * time.Millisecond
)

// FailedPrefix starts the one line a failed boot prints.
const FailedPrefix = "MOLECULE AGENT BOOT FAILED: "

// Options configure one bootstrap run.
type Options struct {
	Params Params
	// ConfigPath is where agent.yaml is written.
	ConfigPath string
	// Executable is the agent binary the service runs; default this one.
	Executable string
	// Timeout bounds the whole boot.
	Timeout time.Duration
	// Poll is how often the agent's status is read while waiting.
	Poll time.Duration
	// IMDSEndpoint overrides the instance metadata endpoint (tests).
	IMDSEndpoint string
	// SSMCredentials overrides the SDK's credential chain (tests).
	SSMCredentials aws.CredentialsProvider
	// Out receives one line per boot phase.
	Out io.Writer
}

// Result is what a successful boot did.
type Result struct {
	ConfigChanged  bool
	UnitChanged    bool
	Restarted      bool
	HostID         string
	Total          time.Duration
	PhaseDurations map[string]time.Duration
}

// phases prints one line per phase with its duration.
type phases struct {
	out  io.Writer
	last time.Time
	res  *Result
}

func (p *phases) done(name, detail string) {
	now := time.Now()
	d := now.Sub(p.last)
	p.last = now
	p.res.PhaseDurations[name] = d
	fmt.Fprintf(p.out, "boot %-13s %8s  %s\n", name, d.Round(time.Millisecond), detail)
}

// Run boots the host: resolve and check the parameters, write agent.yaml,
// install and start the service, and wait until the agent is registered
// and its units are ready. Its error, on one line, is the reason the
// command prints after FailedPrefix; it never holds a secret.
func Run(ctx context.Context, o Options) (*Result, error) {
	o = o.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	res := &Result{PhaseDurations: map[string]time.Duration{}}
	ph := &phases{out: o.Out, last: start, res: res}

	p, err := resolve(ctx, o)
	if err != nil {
		return nil, err
	}
	ph.done("params", describe(p))

	if p.SSMPrefix != "" {
		n, err := checkSecrets(ctx, o, p)
		if err != nil {
			return nil, fmt.Errorf("secrets: %w", err)
		}
		ph.done("secrets", fmt.Sprintf("%d parameters readable under %s", n, p.SSMPrefix))
	}

	cfgData, err := renderFor(p)
	if err != nil {
		return nil, err
	}
	res.ConfigChanged, err = writeIfChanged(o.ConfigPath, cfgData, 0o644)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	ph.done("config", o.ConfigPath+pick(res.ConfigChanged, " written", " unchanged"))
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return nil, err
	}

	svc, changed, err := installService(o.Executable, []string{"run", "--config", o.ConfigPath})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	res.UnitChanged = changed
	ph.done("service", unitPath+pick(changed, " installed and enabled", " unchanged"))

	res.Restarted, err = startService(ctx, svc, res.ConfigChanged || res.UnitChanged)
	if err != nil {
		return nil, err
	}
	socket := cfg.SocketPath()
	_, why, err := waitFor(ctx, socket, o.Poll, "the agent to run", agentRunning)
	if err != nil {
		return nil, err
	}
	ph.done("agent running", pick(res.Restarted, "started, ", "already running, ")+why)

	if cfg.ControlPlane.URL != "" {
		r, why, err := waitFor(ctx, socket, o.Poll, "registration with "+cfg.ControlPlane.URL, registered)
		if err != nil {
			return nil, err
		}
		res.HostID, _ = field(controlPlaneSection(r), "host_id").(string)
		ph.done("registered", why+" at "+cfg.ControlPlane.URL)
	} else {
		ph.done("registered", "skipped: no control plane configured")
	}

	_, why, err = waitFor(ctx, socket, o.Poll, "units to be ready", unitsReady)
	if err != nil {
		return nil, err
	}
	ph.done("units ready", why)
	res.Total = time.Since(start)
	return res, nil
}

func (o Options) withDefaults() Options {
	if o.ConfigPath == "" {
		o.ConfigPath = DefaultConfigPath
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Poll <= 0 {
		o.Poll = DefaultPoll
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Executable == "" {
		if exe, err := os.Executable(); err == nil {
			if real, err := filepath.EvalSymlinks(exe); err == nil {
				exe = real
			}
			o.Executable = exe
		}
	}
	return o
}

func pick(cond bool, yes, no string) string {
	if cond {
		return yes
	}
	return no
}

// resolve fills missing parameters from instance tags (and the region from
// IMDS when SSM needs it), then validates them.
func resolve(ctx context.Context, o Options) (Params, error) {
	p := o.Params
	var md *metadata
	if p.Identity != IdentityEnrollment && (p.NeedsTags() || (p.SSMPrefix != "" && p.Region == "")) {
		md = newMetadata(o.IMDSEndpoint)
	}
	if md != nil && p.NeedsTags() {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		tags, err := md.tags(tctx)
		cancel()
		if err != nil {
			return p, fmt.Errorf("params: --role and --org not given and %w", err)
		}
		p = p.FromTags(tags)
	}
	p = p.WithDefaults()
	if md != nil && p.SSMPrefix != "" && p.Region == "" {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		r, err := md.region(rctx)
		cancel()
		if err != nil {
			return p, fmt.Errorf("params: %w", err)
		}
		p.Region = r
	}
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("params: %w", err)
	}
	return p, nil
}

func describe(p Params) string {
	s := "role " + p.Role + ", org " + p.Org
	if p.Workspace != "" {
		s += ", workspace " + p.Workspace
	}
	s += ", channel " + p.Channel + ", identity " + p.Identity
	if p.Region != "" {
		s += ", region " + p.Region
	}
	return s
}

// checkSecrets reads the SSM prefix once with the instance role, so an IAM
// mistake is reported now, naming what to grant, not later in a log. The
// values are dropped at once; only their count is reported.
func checkSecrets(ctx context.Context, o Options, p Params) (int, error) {
	src, err := secretstore.NewSSM(ctx, secretstore.SSMOptions{Prefix: p.SSMPrefix, Region: p.Region,
		Endpoint: p.SSMEndpoint, Credentials: o.SSMCredentials, IMDSEndpoint: o.IMDSEndpoint,
		MaxAttempts: 3, MaxBackoff: 5 * time.Second})
	if err != nil {
		return 0, err
	}
	vals, err := src.Fetch(ctx)
	if err != nil {
		return 0, err // a FetchError: says what to grant or fix, never a value
	}
	return len(vals), nil
}

// renderFor reads the units file, if any, and renders agent.yaml.
func renderFor(p Params) ([]byte, error) {
	var units []byte
	if p.UnitsFile != "" {
		b, err := os.ReadFile(p.UnitsFile)
		if err != nil {
			return nil, fmt.Errorf("--units-file: %w", err)
		}
		units = b
	}
	data, err := RenderConfig(p, units)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return data, nil
}

// OneLine flattens an error for the FAILED line.
func OneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
