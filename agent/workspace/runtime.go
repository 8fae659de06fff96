//go:build unix

package workspace

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Runtime unit defaults.
const (
	// DefaultConfigsDir is where SaaS hosts keep the runtime's configs
	// (the tenant's Files API writes there too).
	DefaultConfigsDir = config.DefaultWorkspaceConfigsDir
	// DefaultUser runs the runtime on SaaS hosts.
	DefaultUser = "ubuntu"
	// Builtin is the config.Unit.Builtin value of the runtime unit.
	Builtin = config.WorkspaceBuiltin
	// DefaultTokenSecret is the secret (SSM parameter under the host's
	// prefix) holding the workspace auth token.
	DefaultTokenSecret = config.WorkspaceTokenSecret
)

// RuntimeOptions are what the runtime unit's preparation needs. Empty
// WorkspaceID, PlatformURL, HostIP, AdapterModule, ConfigsDir and Home are
// taken from the unit's own env (WORKSPACE_ID, PLATFORM_URL, HOSTNAME,
// ADAPTER_MODULE, CONFIGS_DIR, HOME) as the daemon resolved it.
type RuntimeOptions struct {
	WorkspaceID string
	// PlatformURL is what the runtime calls: the org proxy's URL when it
	// runs, else the tenant's.
	PlatformURL   string
	HostIP        string
	AdapterModule string
	// ConfigsDir is DefaultConfigsDir when empty.
	ConfigsDir string
	// User owns the configs dir and files ("" keeps the agent's); run the
	// unit as the same user.
	User   string
	Home   string
	Config RuntimeConfig
	// Token returns the workspace auth token (secretstore.Store.Get), which
	// Prepare writes to ConfigsDir/.auth_token (placeToken). Nil: the token
	// file is one of the unit's own files (owner: unit), which the daemon's
	// materializer writes like any other (agent/daemon/files.go), and
	// NoSourceToken tells whether the source holds one.
	Token func() (secretstore.Secret, bool)
	// NoSourceToken, with Token nil, reports that the secret source holds
	// no token (the platform-minted flow), so a first start with no token
	// file waits until the tenant shows the workspace.
	NoSourceToken func() bool
	// TokenLocation names the token's parameter in messages, e.g.
	// "/molecule/prod/workspaces/<id>/auth-token".
	TokenLocation string
	// Secrets returns the workspace secrets passed as env (may be nil); an
	// error (keys named in workspace.secrets without a value) blocks the
	// runtime with the error as its status.
	Secrets func() (map[string]secretstore.Secret, error)
	// Checker, when set, is told of every start, and a removed workspace
	// blocks the runtime.
	Checker *Checker
	// State, when set, remembers which source token was written, so a
	// token the platform issued to the runtime is never overwritten.
	State *State
	Log   *slog.Logger

	// redactor gets the token and workspace secret values at each start
	// (set by Hook, which gives it to the log Sink).
	redactor *supervisor.Redactor
}

// Prepare returns a supervisor.Spec.Prepare for the runtime unit. Before
// each start it runs inner (the daemon's env resolution; may be nil), then
// writes config.yaml and .auth_token and returns inner's env with the
// runtime's variables (Env) set over it. A missing token returns a
// *supervisor.BlockedError: the unit waits, not started, until Poke.
func (o RuntimeOptions) Prepare(inner func(context.Context) ([]string, error)) func(context.Context) ([]string, error) {
	if o.TokenLocation == "" {
		o.TokenLocation = "secret " + DefaultTokenSecret
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context) ([]string, error) {
		if o.Checker != nil && o.Checker.IsRemoved() {
			return nil, &supervisor.BlockedError{Reason: "workspace removed on the tenant; the runtime stays stopped"}
		}
		if err := o.Config.Validate("workspace config"); err != nil {
			return nil, &supervisor.BlockedError{Reason: err.Error()}
		}
		var tok secretstore.Secret
		found := false
		if o.Token != nil {
			tok, found = o.Token()
		}
		found = found && strings.TrimSpace(tok.Reveal()) != ""
		var env []string
		if inner != nil {
			var err error
			if env, err = inner(ctx); err != nil {
				return nil, err
			}
		}
		var ws map[string]secretstore.Secret
		if o.Secrets != nil {
			var err error
			if ws, err = o.Secrets(); err != nil {
				return nil, &supervisor.BlockedError{Reason: err.Error()}
			}
		}
		eo := o.fromEnv(env)
		eo.Secrets = ws
		acct, err := runtimeUser(o.User)
		if err != nil {
			return nil, &supervisor.BlockedError{Reason: err.Error()}
		}
		eo.User = acct.Username
		if eo.Home == "" {
			eo.Home = acct.HomeDir
		}
		own, err := Env(eo)
		if err != nil {
			return nil, &supervisor.BlockedError{Reason: "runtime environment: " + err.Error()}
		}
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "PATH=") }) {
			own = append(own, "PATH="+DefaultPath)
		}
		uid, gid, err := supervisor.Owner(o.User)
		if err != nil {
			return nil, err
		}
		if err := EnsureDir(eo.ConfigsDir, uid, gid); err != nil {
			return nil, err
		}
		if err := WriteConfig(eo.ConfigsDir, o.Config, uid, gid); err != nil {
			return nil, err
		}
		var fileTok string
		if o.Token != nil {
			if fileTok, err = o.placeToken(eo.ConfigsDir, tok, found, uid, gid); err != nil {
				return nil, err
			}
		} else if fileTok, err = o.awaitToken(eo.ConfigsDir); err != nil {
			return nil, err
		}
		o.Log.Debug("wrote runtime config", "dir", eo.ConfigsDir)
		if o.redactor != nil {
			vals := []string{strings.TrimSpace(tok.Reveal()), fileTok}
			for _, v := range ws {
				vals = append(vals, v.Reveal())
			}
			o.redactor.Set(vals)
		}
		if o.Checker != nil {
			o.Checker.Starting()
		}
		return mergeEnv(env, own), nil
	}
}

// runtimeUser looks up the unit's user (name or uid; "" is the agent's
// own) for the runtime's HOME, USER and LOGNAME. A missing user is an
// error naming it and saying what to do, not a failed exec.
func runtimeUser(name string) (*user.User, error) {
	if name == "" {
		u, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("runtime user: the agent's own user: %w", err)
		}
		return u, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if byID, err2 := user.LookupId(name); err2 == nil {
			return byID, nil
		}
		return nil, fmt.Errorf("runtime user %q does not exist on this host: create it (the AMI bakes %q) or set the runtime unit's user", name, DefaultUser)
	}
	return u, nil
}

// fromEnv fills the options' empty fields from the unit's own resolved
// environment (WORKSPACE_ID: secret:workspace-id in the role's YAML), then
// from the defaults.
func (o RuntimeOptions) fromEnv(env []string) EnvOptions {
	get := func(v, key string) string {
		if v != "" {
			return v
		}
		for _, kv := range env {
			if val, ok := strings.CutPrefix(kv, key+"="); ok {
				return val
			}
		}
		return ""
	}
	eo := EnvOptions{WorkspaceID: get(o.WorkspaceID, "WORKSPACE_ID"), PlatformURL: get(o.PlatformURL, "PLATFORM_URL"),
		HostIP: get(o.HostIP, "HOSTNAME"), AdapterModule: get(o.AdapterModule, "ADAPTER_MODULE"),
		ConfigsDir: get(o.ConfigsDir, "CONFIGS_DIR"), Home: get(o.Home, "HOME")}
	if eo.ConfigsDir == "" {
		eo.ConfigsDir = DefaultConfigsDir
	}
	return eo
}

// mergeEnv returns base with every key of over replaced by over's value.
func mergeEnv(base, over []string) []string {
	out := slices.DeleteFunc(slices.Clone(base), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.ContainsFunc(over, func(o string) bool { return strings.HasPrefix(o, k+"=") })
	})
	return append(out, over...)
}

// Hook returns the runtime unit's spec hook, for the unit with builtin:
// workspace-runtime; exec is the unit's process driver (nil when the unit is
// not kind exec). It
//   - sends the process's stdout and stderr to sink (the rotated log file;
//     the unit must be kind exec) when sink is not nil, with the workspace
//     token, the workspace secrets and the driver's Redact values redacted;
//   - owns the configs dir and files by the unit's user unless o.User is set;
//   - keeps the unit's ready probe (the agent card probe when it has none)
//     and adds o.Checker's Report to the unit's reporters;
//   - wraps sp.Prepare with o.Prepare.
func Hook(o RuntimeOptions, sink *Sink) func(sp *supervisor.Spec, exec *supervisor.ExecDriver, u config.Unit) error {
	return func(sp *supervisor.Spec, exec *supervisor.ExecDriver, u config.Unit) error {
		if sink != nil {
			if exec == nil {
				return fmt.Errorf("unit %s: the workspace runtime must be kind exec to log to a file", u.Name)
			}
			exec.Stdout = sink.File()
			sink.AddRedactor(exec.Redact)
			o.redactor = &supervisor.Redactor{}
			sink.AddRedactor(o.redactor)
		}
		if o.User == "" {
			o.User = u.User
		}
		if sp.Prober == nil {
			sp.Prober = CardProbe(o.Config.Port)
		}
		sp.Prober = followPort(sp.Prober, o.Config.Port)
		if o.Checker != nil {
			sp.Reporters = append(sp.Reporters, o.Checker.Report)
		}
		sp.Prepare = o.Prepare(sp.Prepare)
		return nil
	}
}

// followPort points an agent-card probe on the loopback (the role's, on
// the default port 8000) at workspace.port, so the probe follows the port
// the runtime is configured to listen on.
func followPort(p supervisor.Prober, port int) supervisor.Prober {
	hp, ok := p.(*supervisor.HTTPProbe)
	if !ok || port == 0 {
		return p
	}
	u, err := url.Parse(hp.URL)
	if err != nil || u.Hostname() != "127.0.0.1" || u.Path != "/.well-known/agent-card.json" || u.Port() == strconv.Itoa(port) {
		return p
	}
	moved := *hp
	u.Host = net.JoinHostPort(u.Hostname(), strconv.Itoa(port))
	moved.URL = u.String()
	return &moved
}

// CardProbe is the runtime's readiness probe: GET
// http://127.0.0.1:<port>/.well-known/agent-card.json answering 200.
func CardProbe(port int) *supervisor.HTTPProbe {
	if port == 0 {
		port = DefaultPort
	}
	return &supervisor.HTTPProbe{URL: "http://127.0.0.1:" + strconv.Itoa(port) + "/.well-known/agent-card.json", Status: 200}
}

var _ supervisor.Reporter = (*Checker)(nil).Report
