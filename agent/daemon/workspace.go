//go:build unix

package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

// workspaceParts are what a workspace host runs beside its runtime unit.
type workspaceParts struct {
	hook    SpecHook
	bg      []Background
	section func() any
	closers []func()
}

// hasBuiltin reports whether a unit of cfg is the given built-in.
func hasBuiltin(cfg *config.Config, b string) bool {
	return slices.ContainsFunc(cfg.Units, func(u config.Unit) bool { return u.Builtin == b })
}

// newWorkspace builds the runtime's hook, its registration checker, the
// rotated log and the optional org-header proxy. The checker restarts and
// stops the runtime through ops, once the units run.
func newWorkspace(ctx context.Context, cfg *config.Config, store *secretstore.Store, h *host, ops *unitOps, log *slog.Logger) (*workspaceParts, error) {
	w := cfg.Workspace
	if w.ID == "" || w.PlatformURL == "" {
		return nil, fmt.Errorf("workspace.id and workspace.platform_url are required for the workspace runtime")
	}
	hostIP := w.HostIP
	if hostIP == "" {
		var err error
		if hostIP, err = h.privateIP(ctx); err != nil {
			return nil, err
		}
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
	noSourceToken := func() bool {
		if store == nil {
			return true
		}
		tok, ok := store.Get(workspace.DefaultTokenSecret)
		return !ok || strings.TrimSpace(tok.Reveal()) == ""
	}
	chk, err := workspace.NewChecker(workspace.CheckerOptions{
		TenantURL: w.PlatformURL, WorkspaceID: w.ID, OrgID: w.OrgID, Log: log, TokenLocation: tokenAt, State: state,
		TokenFile:      filepath.Join(configsDir, workspace.TokenFile),
		NoSourceToken:  noSourceToken,
		SteadyInterval: w.CheckInterval.Duration,
		RefreshToken: func(ctx context.Context) (bool, error) {
			if store == nil {
				return false, nil
			}
			changed, err := store.Refresh(ctx)
			return slices.Contains(changed, workspace.DefaultTokenSecret), err
		},
		Restart: func(ctx context.Context, why string) error {
			return ops.do(ctx, func(s *supervisor.Supervisor) error { return s.Restart(ctx, unit, why) })
		},
		Stop: func() {
			_ = ops.do(context.Background(), func(s *supervisor.Supervisor) error { s.StopUnits(unit); return nil })
		},
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
	parts := &workspaceParts{
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
	// The token file and workspace.secrets are the unit's own files and
	// env (agent/config adds them), resolved like any unit's by the
	// materializer; the token file is owner: unit, so a token the platform
	// issued the runtime is never overwritten with the source's stale one
	// (agent/daemon/files.go). The hook only holds a tokenless first start
	// until the tenant shows the workspace.
	opts := workspace.RuntimeOptions{WorkspaceID: w.ID, PlatformURL: platformURL, HostIP: hostIP,
		AdapterModule: w.AdapterModule, ConfigsDir: configsDir, Checker: chk, State: state, Log: log, TokenLocation: tokenAt,
		NoSourceToken: noSourceToken,
		Config: workspace.RuntimeConfig{Name: w.Name, Description: w.Description, Tier: w.Tier,
			Runtime: w.Runtime, Model: w.Model, Port: w.Port}}
	hook := workspace.Hook(opts, sink)
	parts.hook = func(b *unitBuild) error { return hook(&b.spec, b.exec, b.unit) }
	return parts, nil
}

func (p *workspaceParts) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
}
