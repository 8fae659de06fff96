//go:build unix

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/agent/tunnel"
	"github.com/molecule-ai/molecule-agent/agent/workspace"
)

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

// Assemble builds the daemon for cfg in one pass, each part from parts
// already built: the secrets store, the host's identity, the workspace's
// parts, the units, the supervisor, the daemon, the control-plane loop and
// the loops beside the units. Its duration is the boot's params phase.
// Nothing runs until Run.
func Assemble(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (_ *Daemon, err error) {
	start := time.Now()
	var closers []func()
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				closers[i]()
			}
		}
	}()
	// Changes are handed to a loop of their own so a slow restart never
	// holds up the next refresh.
	changes := &changeQueue{wake: make(chan struct{}, 1)}
	// Every secret value the store has held is redacted from the agent's
	// logs and from every unit's output.
	redact := supervisor.NewRedactor(nil)
	log = slog.New(redact.Handler(log.Handler()))
	store, err := NewSecretsStore(ctx, cfg.Secrets, cfg.Identity.IMDSEndpoint, log, changes.add, redact.Remember)
	if err != nil {
		return nil, err
	}
	h := newHost(cfg, store, log)
	// Parts built before the supervisor reach it through ops.
	ops := newUnitOps()
	b := &builder{cfg: cfg, log: log, store: store, redact: redact, docker: &docker{cfg: cfg, store: store},
		hooks: map[string]SpecHook{tunnel.Builtin: cloudflaredHook(cfg)}}
	var ws *workspaceParts
	if hasBuiltin(cfg, workspace.Builtin) {
		if ws, err = newWorkspace(ctx, cfg, store, h, ops, log); err != nil {
			return nil, err
		}
		closers = append(closers, ws.close)
		b.hooks[workspace.Builtin] = ws.hook
	}
	units, err := b.buildAll()
	if err != nil {
		return nil, err
	}
	specs := make([]supervisor.Spec, len(units))
	for i, u := range units {
		specs[i] = u.spec
	}
	sup, err := supervisor.New(log, specs)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, version: version, started: start, notify: notifier{log: log},
		secrets: store, host: h, sup: sup, registration: newRegistration(), closers: closers,
		unitsUsing: usersOf(units), phase: "starting", sections: map[string]func() any{}}
	if ws != nil {
		d.AddSection("workspace", ws.section)
		d.unitLoops = append(d.unitLoops, ws.bg...)
	}
	d.unitLoops = append(d.unitLoops, ops.serve(sup))
	if store != nil {
		d.AddSection("secrets", func() any { return store.Status() })
		d.secretLoops = append(d.secretLoops, func(ctx context.Context) { _ = store.Run(ctx) }, d.secretChanges(changes))
	}
	desired := newDesired()
	if cfg.ControlPlane.URL != "" {
		if d.fleet, err = newFleet(cfg, h, d, desired, log); err != nil {
			return nil, fmt.Errorf("control_plane: %w", err)
		}
		fleet := d.fleet
		d.AddSection("control_plane", func() any { return fleetSection(fleet.Status()) })
	}
	if f := cfg.Updates.DesiredFile; f != "" {
		d.loops = append(d.loops, desiredFileLoop(f, desired, log))
	}
	if u := updatable(units); len(u) > 0 && (cfg.ControlPlane.URL != "" || cfg.Updates.DesiredFile != "") {
		d.unitLoops = append(d.unitLoops, updateLoop(sup, u, desired, log))
	}
	if cfg.Identity.WatchInterruptions {
		d.loops = append(d.loops, d.interruptionWatch(h, log))
	}
	d.record(PhaseParams, start, time.Now(), "")
	return d, nil
}

// usersOf returns, for a secret name, the units whose env or files use it,
// in dependency order once the supervisor sorts them.
func usersOf(units []unitBuild) func(string) []string {
	by := map[string][]string{}
	for _, u := range units {
		for _, ref := range u.unit.SecretRefs() {
			if !slices.Contains(by[ref], u.unit.Name) {
				by[ref] = append(by[ref], u.unit.Name)
			}
		}
	}
	return func(secret string) []string { return by[secret] }
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

// unitOps carries what parts built before the supervisor (the workspace
// checker) ask of it, to a loop that holds it once the units run.
type unitOps struct {
	ch   chan func(*supervisor.Supervisor)
	done chan struct{} // closed when the loop ends: nothing more is done
}

func newUnitOps() *unitOps {
	return &unitOps{ch: make(chan func(*supervisor.Supervisor)), done: make(chan struct{})}
}

// do runs f on the supervisor and returns its error, or ctx's.
func (o *unitOps) do(ctx context.Context, f func(*supervisor.Supervisor) error) error {
	reply := make(chan error, 1)
	select {
	case o.ch <- func(s *supervisor.Supervisor) { reply <- f(s) }:
	case <-o.done:
		return errAgentStopping
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errAgentStopping = errors.New("the agent is stopping")

func (o *unitOps) serve(s *supervisor.Supervisor) Background {
	return func(ctx context.Context) {
		defer close(o.done)
		var wg sync.WaitGroup
		defer wg.Wait()
		for {
			select {
			case f := <-o.ch:
				wg.Add(1)
				go func() { defer wg.Done(); f(s) }()
			case <-ctx.Done():
				return
			}
		}
	}
}
