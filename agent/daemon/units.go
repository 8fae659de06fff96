package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/container"
	"github.com/molecule-ai/molecule-agent/agent/restart"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// DriverFactory builds the driver for one kind of unit (kind: container is
// provided by the container package).
type DriverFactory func(u config.Unit, log *slog.Logger) (supervisor.Driver, error)

// baseEnv is what every exec unit gets besides its own env: the agent's own
// environment (which may hold credentials) is never inherited.
func baseEnv() []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	for _, k := range []string{"LANG", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// specFor turns a configured unit into what the supervisor runs.
func (d *Daemon) specFor(u config.Unit) (supervisor.Spec, error) {
	log := d.log.With("unit", u.Name)
	sig, err := config.ParseSignal(u.Stop.Signal)
	if err != nil {
		return supervisor.Spec{}, err
	}
	var drv supervisor.Driver
	redact := supervisor.NewRedactor(d.redact)
	switch u.Kind {
	case config.KindExec:
		drv = &supervisor.ExecDriver{Command: u.Command, Args: u.Args, Dir: u.Dir, User: u.User,
			StopSignal: sig, Log: log, Redact: redact, Output: supervisor.OutputLimits{
				LinesPerSecond: d.cfg.Log.LinesPerSecond, Burst: d.cfg.Log.Burst,
				MaxLineBytes: d.cfg.Log.MaxLineBytes}}
	default:
		f, ok := d.drivers[u.Kind]
		if !ok {
			return supervisor.Spec{}, fmt.Errorf("unit %s: kind %s is not available in this agent", u.Name, u.Kind)
		}
		if drv, err = f(u, log); err != nil {
			return supervisor.Spec{}, fmt.Errorf("unit %s: %w", u.Name, err)
		}
	}
	sp := supervisor.Spec{
		Name: u.Name, Kind: u.Kind, After: u.After, Driver: drv, Grace: u.Stop.Grace.Duration,
		KeepOnShutdown: u.Container != nil && u.Container.OnAgentExit != "stop",
		Restart: restart.Policy{Mode: restart.Mode(u.Restart.Policy),
			InitialDelay: u.Restart.InitialDelay.Duration, MaxDelay: u.Restart.MaxDelay.Duration,
			StableAfter: u.Restart.StableAfter.Duration, Budget: u.Restart.Budget,
			Window: u.Restart.Window.Duration, NoRestart: u.Restart.NoRestartExitCodes},
	}
	if p := u.Ready; p != nil {
		sp.ProbeInterval, sp.ProbeTimeout = p.Interval.Duration, p.Timeout.Duration
		switch {
		case p.HTTP != "":
			sp.Prober = &supervisor.HTTPProbe{URL: p.HTTP, Status: p.Status}
		case p.TCP != "":
			sp.Prober = &supervisor.TCPProbe{Addr: p.TCP}
		case p.DockerHealth:
			if cd, ok := drv.(*container.Driver); ok {
				sp.Prober = cd.HealthProber()
			}
		}
	}
	mat := &materializer{d: d, unit: u, log: log, redact: redact}
	sp.Prepare = mat.prepare
	sp.Cleanup = mat.cleanup
	if hook, ok := d.hooks[u.Builtin]; ok && u.Builtin != "" {
		if err := hook(&sp, u); err != nil {
			return supervisor.Spec{}, fmt.Errorf("unit %s: %w", u.Name, err)
		}
	}
	if d.containers != nil && u.Kind == config.KindContainer {
		d.containers.track(u.Name, sp)
	}
	return sp, nil
}

// materializer resolves a unit's env and files before each start.
type materializer struct {
	d      *Daemon
	unit   config.Unit
	log    *slog.Logger
	redact *supervisor.Redactor
	// secretVals are the values resolved from references at the last prepare.
	secretVals []string
}

// resolve turns a literal or a secret: reference into its value, collecting
// what is missing.
func (m *materializer) resolve(v string, missing *[]string) secretstore.Secret {
	if m.d.secrets == nil {
		if _, isRef, _ := secretstore.ParseRef(v); isRef {
			*missing = append(*missing, v+" (the agent has no secrets source; set secrets.source)")
			return secretstore.Secret{}
		}
		return secretstore.New(v)
	}
	s, err := m.d.secrets.Resolve(v)
	if err != nil {
		*missing = append(*missing, err.Error())
	}
	if _, isRef, _ := secretstore.ParseRef(v); isRef && err == nil {
		m.secretVals = append(m.secretVals, s.Reveal())
	}
	return s
}

func (m *materializer) prepare(context.Context) ([]string, error) {
	env := baseEnv()
	m.secretVals = m.secretVals[:0]
	keys := slices.Sorted(maps.Keys(m.unit.Env))
	var missing []string
	for _, k := range keys {
		v := m.resolve(m.unit.Env[k], &missing)
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, k+"="+v.Reveal())
	}
	contents := make([]secretstore.Secret, len(m.unit.Files))
	for i, f := range m.unit.Files {
		contents[i] = m.resolve(f.Content, &missing)
	}
	if len(missing) > 0 {
		return nil, &supervisor.BlockedError{Reason: strings.Join(missing, "; ")}
	}
	m.redact.Set(m.secretVals)
	if err := writeFiles(m.unit, contents, m.log); err != nil {
		return nil, err
	}
	return env, nil
}

func (m *materializer) cleanup() { removeFiles(m.unit, m.log) }
