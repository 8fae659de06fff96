package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

// Background is a loop that runs beside the units until its context ends.
type Background func(ctx context.Context)

// NewSecretsStore builds the store for the configured source, or nil when
// the config has none. Nothing is fetched yet. onValues gets every value
// fetched (the agent-wide redactor's Remember).
func NewSecretsStore(ctx context.Context, c config.Secrets, imdsEndpoint string, log *slog.Logger, onChange, onValues func([]string)) (*secretstore.Store, error) {
	var src secretstore.Source
	switch c.Source {
	case "":
		return nil, nil
	case "ssm":
		s, err := secretstore.NewSSM(ctx, secretstore.SSMOptions{Prefix: c.Prefix, Region: c.Region, Endpoint: c.Endpoint,
			IMDSEndpoint: imdsEndpoint})
		if err != nil {
			return nil, fmt.Errorf("secrets: %w", err)
		}
		src = s
	case "file":
		src = secretstore.NewFile(c.File)
	default:
		return nil, fmt.Errorf("secrets.source: %q is not a source", c.Source)
	}
	return secretstore.NewStore(src, secretstore.StoreOptions{Refresh: c.Refresh.Duration, Jitter: c.Jitter,
		Logger: log, OnChange: onChange, OnValues: onValues}), nil
}

// Assemble builds the daemon for cfg with every part the config asks for,
// and the loops to run beside it.
func Assemble(ctx context.Context, cfg *config.Config, log *slog.Logger, version string, o Options) (d *Daemon, bg []Background, err error) {
	// Changes are handed to a loop of their own so a slow restart never
	// holds up the next refresh.
	changes := &changeQueue{wake: make(chan struct{}, 1)}
	// Every secret value the store has held is redacted from the agent's
	// logs and from every unit's output.
	o.redact = supervisor.NewRedactor(nil)
	log = slog.New(o.redact.Handler(log.Handler()))
	store, err := NewSecretsStore(ctx, cfg.Secrets, cfg.Identity.IMDSEndpoint, log, changes.add, o.redact.Remember)
	if err != nil {
		return nil, nil, err
	}
	o.Config, o.Log, o.Version, o.Secrets = cfg, log, version, store
	if o.Hooks == nil {
		o.Hooks = builtinHooks(cfg)
	}
	ctrs := &containers{cfg: cfg, store: store, log: log}
	if o.Drivers == nil {
		o.Drivers = map[string]DriverFactory{}
	}
	if _, ok := o.Drivers[config.KindContainer]; !ok {
		o.Drivers[config.KindContainer] = ctrs.factory
	}
	o.containers = ctrs
	var ws *workspaceParts
	if hasBuiltin(cfg, workspace.Builtin) {
		if ws, err = newWorkspace(ctx, cfg, store, log, &d); err != nil {
			return nil, nil, err
		}
		o.Hooks[workspace.Builtin] = ws.hook
		bg = append(bg, ws.bg...)
	}
	if d, err = New(o); err != nil {
		if ws != nil {
			ws.close()
		}
		return nil, nil, err
	}
	if ws != nil {
		d.AddSection("workspace", ws.section)
		d.closers = append(d.closers, ws.close)
		d.extraRefs = map[string][]string{ws.unit: ws.secretRefs}
	}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	if store != nil {
		d.AddSection("secrets", func() any { return store.Status() })
		bg = append(bg, func(ctx context.Context) { _ = store.Run(ctx) }, d.secretChanges(changes))
	}
	desired := newDesired()
	if cfg.ControlPlane.URL != "" {
		loop, err := newFleet(cfg, store, log, version, &d, desired)
		if err != nil {
			return nil, nil, fmt.Errorf("control_plane: %w", err)
		}
		d.AddSection("control_plane", func() any { return fleetSection(loop.Status()) })
		bg = append(bg, func(ctx context.Context) { _ = loop.Run(ctx) })
	}
	if f := cfg.Updates.DesiredFile; f != "" {
		bg = append(bg, desiredFileLoop(f, desired, log))
	}
	if len(ctrs.units) > 0 && (cfg.ControlPlane.URL != "" || cfg.Updates.DesiredFile != "") {
		bg = append(bg, ctrs.updateLoop(d, desired))
	}
	if cfg.Identity.WatchInterruptions {
		ic := identity.New(identity.Options{Endpoint: cfg.Identity.IMDSEndpoint, Logger: log})
		bg = append(bg, d.interruptionWatch(ic, log))
	}
	return d, bg, nil
}

// secretChanges restarts the units using changed secrets, as the store
// reports changes.
func (d *Daemon) secretChanges(q *changeQueue) Background {
	return func(ctx context.Context) {
		for {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
				d.MarkBoot(StepSecretsLoaded)
				d.SecretsChanged(ctx, q.take())
			}
		}
	}
}

// changeQueue merges changed secret names until the restart loop takes them.
type changeQueue struct {
	mu    sync.Mutex
	names []string
	wake  chan struct{}
}

func (q *changeQueue) add(names []string) {
	q.mu.Lock()
	for _, n := range names {
		if !slices.Contains(q.names, n) {
			q.names = append(q.names, n)
		}
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *changeQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.names
	q.names = nil
	return n
}
