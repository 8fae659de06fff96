//go:build unix

// Package daemon is `molecule-agent run`: it assembles the agent's parts
// from the config in one pass (Assemble), then boots in named phases
// (params, secrets, identity, registration, units), serves the status API,
// speaks sd_notify, and on SIGTERM stops every unit in reverse dependency
// order before it exits.
package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/heartbeat"
	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/status"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
	"github.com/molecule-ai/molecule-agent/controlplane/api"
)

// Background is a loop that runs beside the units until its context ends.
type Background func(ctx context.Context)

// Daemon is one run of the agent, built by Assemble.
type Daemon struct {
	cfg     *config.Config
	log     *slog.Logger
	version string
	started time.Time
	notify  notifier

	secrets *secretstore.Store
	host    *host
	sup     *supervisor.Supervisor
	// fleet is the control-plane loop, nil without control_plane.url.
	fleet        *heartbeat.Loop
	registration *registration
	// Loops by when they start: always with Run, after the secrets
	// phase, and once the units run.
	loops, secretLoops, unitLoops []Background
	// closers run after every unit has stopped (log files, proxies).
	closers []func()
	// unitsUsing maps a secret name to the units that use it.
	unitsUsing func(secret string) []string

	// Set by Run.
	unitsCtx context.Context
	bgCtx    context.Context
	wg       sync.WaitGroup

	mu           sync.Mutex
	timeline     []api.BootStep
	unitsStarted bool
	// halted: every unit was stopped for good (deprovisioned, interrupted);
	// units not started yet never start.
	halted   bool
	notice   *identity.Notice
	phase    string
	sections map[string]func() any
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

// spawn runs loops beside the units until Run ends.
func (d *Daemon) spawn(loops ...Background) {
	for _, f := range loops {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); f(d.bgCtx) }()
	}
}

// stopUnits stops every unit for good, in reverse dependency order; units
// not started yet never start.
func (d *Daemon) stopUnits() {
	d.mu.Lock()
	d.halted = true
	started := d.unitsStarted
	d.mu.Unlock()
	if started {
		d.sup.StopUnits(d.sup.Names()...)
	}
}

// Run boots and supervises the units until ctx is cancelled, then stops
// them all and returns nil. A cancelled context is a clean exit, not an
// error.
func (d *Daemon) Run(ctx context.Context) error {
	defer d.close()
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
	go func() {
		if err := srv.Serve(); err != nil {
			d.log.Error("status API stopped", "err", err)
		}
	}()

	unitsCtx, stopUnits := context.WithCancel(context.Background())
	defer stopUnits()
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	d.unitsCtx, d.bgCtx = unitsCtx, bgCtx
	d.spawn(d.loops...)
	d.spawn(d.sup.Run, func(ctx context.Context) { d.notify.watchdog(ctx, d.sup.Alive) }, reapLoop)
	booted := make(chan struct{})
	go func() { defer close(booted); d.boot(bgCtx) }()
	d.notify.ready()

	<-ctx.Done()
	d.SetPhase("stopping")
	d.notify.stopping()
	d.log.Info("agent stopping: stopping units")
	stopBG()
	<-booted
	d.mu.Lock()
	started := d.unitsStarted
	d.mu.Unlock()
	if started {
		d.sup.Stop()
	}
	stopUnits()
	_ = srv.Close()
	d.wg.Wait()
	d.removeSecretFiles()
	d.log.Info("agent stopped")
	return nil
}

// close releases what runs beside the units (log files, proxies).
func (d *Daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
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
