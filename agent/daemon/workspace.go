package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

// workspaceParts are what a workspace host runs beside its runtime unit.
type workspaceParts struct {
	// unit is the runtime's unit name; secretRefs the workspace secrets it
	// gets as env, so a rotation restarts it.
	unit       string
	secretRefs []string
	hook       SpecHook
	bg         []Background
	section    func() any
	closers    []func()
}

// hasBuiltin reports whether a unit of cfg is the given built-in.
func hasBuiltin(cfg *config.Config, b string) bool {
	return slices.ContainsFunc(cfg.Units, func(u config.Unit) bool { return u.Builtin == b })
}

// newWorkspace builds the runtime's hook, its registration checker, the
// rotated log and the optional org-header proxy. sup is filled in once the
// daemon exists (the checker restarts and stops the runtime through it).
func newWorkspace(ctx context.Context, cfg *config.Config, store *secretstore.Store, log *slog.Logger, d **Daemon) (*workspaceParts, error) {
	w := cfg.Workspace
	if w.ID == "" || w.PlatformURL == "" {
		return nil, fmt.Errorf("workspace.id and workspace.platform_url are required for the workspace runtime")
	}
	hostIP, err := workspaceHostIP(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	unit := ""
	for _, u := range cfg.Units {
		if u.Builtin == workspace.Builtin {
			unit = u.Name
		}
	}
	tokenAt := "secret " + workspace.DefaultTokenSecret
	if cfg.Secrets.Prefix != "" {
		tokenAt = cfg.Secrets.Prefix + "/" + workspace.DefaultTokenSecret
	}
	configsDir := w.ConfigsDir
	if configsDir == "" {
		configsDir = workspace.DefaultConfigsDir
	}
	// Read before anything starts: a workspace removed before an agent
	// restart never runs its runtime again.
	state, err := workspace.OpenState(filepath.Join(cfg.StateDir, workspace.StateFileName), w.ID)
	if err != nil {
		return nil, err
	}
	chk, err := workspace.NewChecker(workspace.CheckerOptions{
		TenantURL: w.PlatformURL, WorkspaceID: w.ID, OrgID: w.OrgID, Log: log, TokenLocation: tokenAt, State: state,
		TokenFile: filepath.Join(configsDir, workspace.TokenFile),
		NoSourceToken: func() bool {
			if store == nil {
				return true
			}
			_, ok := store.Get(workspace.DefaultTokenSecret)
			return !ok
		},
		SteadyInterval: w.CheckInterval.Duration,
		RefreshToken: func(ctx context.Context) (bool, error) {
			if store == nil {
				return false, nil
			}
			changed, err := store.Refresh(ctx)
			return slices.Contains(changed, workspace.DefaultTokenSecret), err
		},
		Restart: func(ctx context.Context, why string) error { return (*d).sup.Restart(ctx, unit, why) },
		Stop:    func() { (*d).sup.StopUnits(unit) },
	})
	if err != nil {
		return nil, fmt.Errorf("workspace: %w", err)
	}
	logPath := w.LogPath
	if logPath == "" {
		logPath = workspace.DefaultLogPath
	}
	logf, err := workspace.OpenRotating(logPath, workspace.DefaultLogMaxBytes, workspace.DefaultLogKeep, -1, -1)
	if err != nil {
		return nil, fmt.Errorf("workspace.log_path: %w", err)
	}
	sink, err := workspace.NewSink(logf, chk.ObserveLine)
	if err != nil {
		logf.Close()
		return nil, err
	}
	// The token is a ref too: an operator's rotation restarts the runtime,
	// whose Prepare then writes the new token (agent/workspace/token.go).
	parts := &workspaceParts{unit: unit, secretRefs: append(slices.Sorted(maps.Values(w.Secrets)), workspace.DefaultTokenSecret),
		section: func() any { return chk.Status() },
		bg:      []Background{chk.Run},
		closers: []func(){func() { sink.Close(2 * time.Second) }, func() { logf.Close() }}}
	platformURL := w.PlatformURL
	if w.Proxy.Enabled {
		listen := w.Proxy.Listen
		if listen == "" {
			listen = "127.0.0.1:8081"
		}
		p, err := workspace.ListenProxy(listen, w.PlatformURL, w.OrgID, log)
		if err != nil {
			parts.close()
			return nil, fmt.Errorf("workspace.proxy: %w", err)
		}
		platformURL = p.URL()
		parts.closers = append(parts.closers, func() { p.Close() })
	}
	opts := workspace.RuntimeOptions{WorkspaceID: w.ID, PlatformURL: platformURL, HostIP: hostIP,
		AdapterModule: w.AdapterModule, ConfigsDir: configsDir, Checker: chk, State: state, Log: log, TokenLocation: tokenAt,
		Config: workspace.RuntimeConfig{Name: w.Name, Description: w.Description, Tier: w.Tier,
			Runtime: w.Runtime, Model: w.Model, Port: w.Port}}
	if store != nil {
		opts.Token = func() (secretstore.Secret, bool) { return store.Get(workspace.DefaultTokenSecret) }
		opts.Secrets = func() (map[string]secretstore.Secret, error) {
			if !store.Status().Loaded {
				return nil, fmt.Errorf("waiting for the first load of the secrets (%s)", store.Status().Source)
			}
			out := map[string]secretstore.Secret{}
			var missing []string
			for _, env := range slices.Sorted(maps.Keys(w.Secrets)) {
				name := w.Secrets[env]
				if v, ok := store.Get(name); ok {
					out[env] = v
				} else {
					missing = append(missing, fmt.Sprintf("%s (secret %s)", env, secretAt(cfg, name)))
				}
			}
			if len(missing) > 0 {
				return nil, fmt.Errorf("workspace.secrets without a value: %s; the runtime starts once they are there",
					strings.Join(missing, ", "))
			}
			return out, nil
		}
	}
	parts.hook = workspace.Hook(opts, sink)
	return parts, nil
}

// secretAt names a secret's parameter for messages.
func secretAt(cfg *config.Config, name string) string {
	if cfg.Secrets.Prefix != "" {
		return cfg.Secrets.Prefix + "/" + name
	}
	return name
}

func (p *workspaceParts) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}

// workspaceHostIP is the address the runtime registers: the configured one,
// else the private IPv4 from IMDS, else (off EC2) the first non-loopback IPv4.
func workspaceHostIP(ctx context.Context, cfg *config.Config, log *slog.Logger) (string, error) {
	if cfg.Workspace.HostIP != "" {
		return cfg.Workspace.HostIP, nil
	}
	if cfg.Identity.Mode != "enrollment" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id, err := identity.New(identity.Options{Endpoint: cfg.Identity.IMDSEndpoint, Logger: log}).Identity(ctx)
		if err != nil {
			return "", fmt.Errorf("workspace host IP from IMDS: %w (set workspace.host_ip off EC2)", err)
		}
		return id.PrivateIPv4, nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", fmt.Errorf("workspace host IP: %w; set workspace.host_ip", err)
	}
	return workspace.PickHostIP(addrs)
}
