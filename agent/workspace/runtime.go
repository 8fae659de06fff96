package workspace

import (
	"context"
	"fmt"
	"log/slog"
	"os/user"
	"slices"
	"strconv"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/secrets"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Runtime unit defaults.
const (
	// DefaultConfigsDir is where SaaS hosts keep the runtime's configs
	// (the tenant's Files API writes there too).
	DefaultConfigsDir = "/opt/configs"
	// DefaultUser runs the runtime on SaaS hosts.
	DefaultUser = "ubuntu"
	// DefaultTokenSecret is the secret (SSM parameter under the host's
	// prefix) holding the workspace auth token.
	DefaultTokenSecret = "auth-token"
)

// RuntimeOptions are what the runtime unit's preparation needs.
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
	// Token returns the workspace auth token (secrets.Store.Get).
	Token func() (secrets.Secret, bool)
	// TokenLocation names the token's parameter in messages, e.g.
	// "/molecule/prod/workspaces/<id>/auth-token".
	TokenLocation string
	// Secrets returns the workspace secrets passed as env (may be nil).
	Secrets func() map[string]secrets.Secret
	// Checker, when set, is told of every start, and a removed workspace
	// blocks the runtime.
	Checker *Checker
	Log     *slog.Logger
}

// Prepare returns a supervisor.Spec.Prepare for the runtime unit. Before
// each start it runs inner (the daemon's env resolution; may be nil), then
// writes config.yaml and .auth_token and returns inner's env with the
// runtime's variables (Env) set over it. A missing token returns a
// *supervisor.BlockedError: the unit waits, not started, until Poke.
func (o RuntimeOptions) Prepare(inner func(context.Context) ([]string, error)) func(context.Context) ([]string, error) {
	if o.ConfigsDir == "" {
		o.ConfigsDir = DefaultConfigsDir
	}
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
		var tok secrets.Secret
		found := false
		if o.Token != nil {
			tok, found = o.Token()
		}
		if !found || strings.TrimSpace(tok.Reveal()) == "" {
			return nil, &supervisor.BlockedError{Reason: "workspace auth token missing: no value at " + o.TokenLocation +
				"; the runtime starts once it is there"}
		}
		var env []string
		if inner != nil {
			var err error
			if env, err = inner(ctx); err != nil {
				return nil, err
			}
		}
		var ws map[string]secrets.Secret
		if o.Secrets != nil {
			ws = o.Secrets()
		}
		own, err := Env(EnvOptions{WorkspaceID: o.WorkspaceID, PlatformURL: o.PlatformURL, HostIP: o.HostIP,
			AdapterModule: o.AdapterModule, ConfigsDir: o.ConfigsDir, Home: o.Home, Secrets: ws})
		if err != nil {
			return nil, &supervisor.BlockedError{Reason: "runtime environment: " + err.Error()}
		}
		uid, gid, err := owner(o.User)
		if err != nil {
			return nil, err
		}
		if err := EnsureDir(o.ConfigsDir, uid, gid); err != nil {
			return nil, err
		}
		if err := WriteConfig(o.ConfigsDir, o.Config, uid, gid); err != nil {
			return nil, err
		}
		if err := WriteToken(o.ConfigsDir, tok, uid, gid); err != nil {
			return nil, &supervisor.BlockedError{Reason: fmt.Sprintf("%s: %v", o.TokenLocation, err)}
		}
		o.Log.Debug("wrote runtime config and token", "dir", o.ConfigsDir)
		if o.Checker != nil {
			o.Checker.Starting()
		}
		return mergeEnv(env, own), nil
	}
}

// mergeEnv returns base with every key of over replaced by over's value.
func mergeEnv(base, over []string) []string {
	out := slices.DeleteFunc(slices.Clone(base), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return slices.ContainsFunc(over, func(o string) bool { return strings.HasPrefix(o, k+"=") })
	})
	return append(out, over...)
}

// owner resolves a user name or uid (-1, -1 for "").
func owner(name string) (int, int, error) {
	if name == "" {
		return -1, -1, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return 0, 0, fmt.Errorf("runtime user %q: %w (create it or change the runtime unit's user)", name, err)
		}
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// CardProbe is the runtime's readiness probe: GET
// http://127.0.0.1:<port>/.well-known/agent-card.json answering 200.
func CardProbe(port int) *supervisor.HTTPProbe {
	if port == 0 {
		port = DefaultPort
	}
	return &supervisor.HTTPProbe{URL: "http://127.0.0.1:" + strconv.Itoa(port) + "/.well-known/agent-card.json", Status: 200}
}

// Prober wraps the runtime's readiness probe so the unit's status (and the
// heartbeats built from it) carry the Checker's Report.
func (c *Checker) Prober(p supervisor.Prober) supervisor.Prober { return &reportingProbe{p: p, c: c} }

type reportingProbe struct {
	p supervisor.Prober
	c *Checker
}

func (r *reportingProbe) Ready(ctx context.Context) (bool, string, error) { return r.p.Ready(ctx) }
func (r *reportingProbe) Report() map[string]string                       { return r.c.Report() }

var (
	_ supervisor.Prober   = (*reportingProbe)(nil)
	_ supervisor.Reporter = (*reportingProbe)(nil)
	_ supervisor.Reporter = (*Checker)(nil)
)
