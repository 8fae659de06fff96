// Package daemon is `molecule-agent run`: it loads the units, starts the
// supervisor, serves the status API, speaks sd_notify, and on SIGTERM stops
// every unit in reverse dependency order before it exits.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Options configure a Daemon.
type Options struct {
	Config  *config.Config
	Log     *slog.Logger
	Version string
	// Drivers adds unit kinds beyond exec (e.g. "container").
	Drivers map[string]DriverFactory
	// Secrets resolves secret: references; nil means no secrets source.
	Secrets *secretstore.Store
	// Hooks adjust the spec of units by their builtin name (cloudflared,
	// runtime): extra readiness, status, preparation.
	Hooks map[string]SpecHook

	containers *containers
	// redact is the agent-wide redactor every unit's redactor consults.
	redact *supervisor.Redactor
}

// Daemon is one run of the agent.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	drivers map[string]DriverFactory
	secrets *secretstore.Store
	hooks   map[string]SpecHook
	// containers tracks kind: container units for image updates.
	containers *containers
	redact     *supervisor.Redactor
	started    time.Time
	notify     notifier

	sup *supervisor.Supervisor
	// closers run after every unit has stopped (log files, proxies).
	closers []func()
	// extraRefs are secrets a unit uses outside its env and files (the
	// workspace runtime's workspace.secrets), by unit name.
	extraRefs map[string][]string

	mu       sync.Mutex
	notice   *identity.Notice
	boot     []api.BootStep
	phase    string
	sections map[string]func() any
}

// New prepares a daemon; nothing runs until Run.
func New(o Options) (*Daemon, error) {
	d := &Daemon{cfg: o.Config, log: o.Log, version: o.Version, drivers: o.Drivers,
		secrets: o.Secrets, hooks: o.Hooks, containers: o.containers, redact: o.redact, started: time.Now(), phase: "starting",
		notify: notifier{log: o.Log}, sections: map[string]func() any{}}
	specs := make([]supervisor.Spec, 0, len(o.Config.Units))
	for _, u := range o.Config.Units {
		sp, err := d.specFor(u)
		if err != nil {
			return nil, err
		}
		specs = append(specs, sp)
	}
	sup, err := supervisor.New(o.Log, specs)
	if err != nil {
		return nil, err
	}
	d.sup = sup
	d.MarkBoot(StepAgentStarted)
	return d, nil
}

// Supervisor gives other parts (updates, secrets refresh) the running units.
func (d *Daemon) Supervisor() *supervisor.Supervisor { return d.sup }

// AddSection adds a named part to the status report.
func (d *Daemon) AddSection(name string, f func() any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.sections[name] = f
}

// SetPhase sets the agent phase shown in status ("idle" once deprovisioned).
func (d *Daemon) SetPhase(p string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.phase = p
}

// Report is the status report.
func (d *Daemon) Report() status.Report {
	d.mu.Lock()
	r := status.Report{Agent: status.Agent{Version: d.version, PID: os.Getpid(), Started: d.started,
		Role: d.cfg.Role, Phase: d.phase}, Sections: map[string]any{}}
	fs := make(map[string]func() any, len(d.sections))
	for k, f := range d.sections {
		fs[k] = f
	}
	d.mu.Unlock()
	for k, f := range fs {
		r.Sections[k] = f()
	}
	r.Units = d.sup.Status()
	return r
}

// Run supervises the units until ctx is cancelled, then stops them all and
// returns nil. A cancelled context is a clean exit, not an error.
func (d *Daemon) Run(ctx context.Context, background ...Background) error {
	if err := supervisor.BecomeSubreaper(); err != nil {
		d.log.Warn("cannot become child subreaper; orphaned grandchildren go to PID 1", "err", err)
	}
	// Secret files go under it: no symlink in its path, owned by root.
	if err := safefile.EnsureDir(d.cfg.RunDir, 0o711, -1, -1); err != nil {
		return fmt.Errorf("run_dir: %w", err)
	}
	srv, err := status.Listen(d.cfg.SocketPath(), d.Report)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(); err != nil {
			d.log.Error("status API stopped", "err", err)
		}
	}()

	unitsCtx, stopUnits := context.WithCancel(context.Background())
	defer stopUnits()
	d.sup.Start(unitsCtx)
	d.SetPhase("running")
	d.log.Info("agent running", "version", d.version, "units", len(d.cfg.Units),
		"status_socket", d.cfg.SocketPath())
	d.notify.ready()

	bgCtx, stopBG := context.WithCancel(ctx)
	for _, f := range background {
		wg.Add(1)
		go func() { defer wg.Done(); f(bgCtx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); d.notify.watchdog(bgCtx, func() bool { return true }) }()
	wg.Add(1)
	go func() { defer wg.Done(); reapLoop(bgCtx) }()

	<-ctx.Done()
	d.SetPhase("stopping")
	d.notify.stopping()
	d.log.Info("agent stopping: stopping units")
	stopBG()
	d.sup.Stop()
	stopUnits()
	_ = srv.Close()
	wg.Wait()
	d.removeSecretFiles()
	d.close()
	d.log.Info("agent stopped")
	return nil
}

// close releases what runs beside the units (log files, proxies).
func (d *Daemon) close() {
	for _, c := range d.closers {
		c()
	}
}

// removeSecretFiles removes every unit's secret files.
func (d *Daemon) removeSecretFiles() {
	for _, u := range d.cfg.Units {
		removeFiles(u, d.log)
	}
}

// reapLoop reaps orphans that exit while their unit keeps running.
func reapLoop(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			supervisor.ReapOrphans()
		}
	}
}
