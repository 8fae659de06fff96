//go:build unix

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

// unitBuild is one unit as Assemble builds it: its config, the spec the
// supervisor runs, and its typed driver for the hooks and image updates.
type unitBuild struct {
	unit config.Unit
	spec supervisor.Spec
	exec *supervisor.ExecDriver // kind exec
	ctr  *container.Driver      // kind container
}

// SpecHook adjusts a built-in unit as it is built: its own readiness,
// status facets or preparation. It may wrap b.spec.Prepare.
type SpecHook func(b *unitBuild) error

// builder turns configured units into what the supervisor runs.
type builder struct {
	cfg   *config.Config
	log   *slog.Logger
	store *secretstore.Store
	// redact is the agent-wide redactor each unit's redactor consults.
	redact *supervisor.Redactor
	docker *docker
	// hooks by builtin name (cloudflared, workspace-runtime).
	hooks map[string]SpecHook
}

func (b *builder) buildAll() ([]unitBuild, error) {
	out := make([]unitBuild, 0, len(b.cfg.Units))
	for _, u := range b.cfg.Units {
		ub, err := b.build(u)
		if err != nil {
			return nil, err
		}
		out = append(out, ub)
	}
	return out, nil
}

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

// build turns one configured unit into what the supervisor runs.
func (b *builder) build(u config.Unit) (unitBuild, error) {
	log := b.log.With("unit", u.Name)
	sig, err := config.ParseSignal(u.Stop.Signal)
	if err != nil {
		return unitBuild{}, err
	}
	ub := unitBuild{unit: u}
	var drv supervisor.Driver
	redact := supervisor.NewRedactor(b.redact)
	switch u.Kind {
	case config.KindExec:
		ub.exec = &supervisor.ExecDriver{Command: u.Command, Args: u.Args, Dir: u.Dir, User: u.User,
			StopSignal: sig, Log: log, Redact: redact, Output: supervisor.OutputLimits{
				LinesPerSecond: b.cfg.Log.LinesPerSecond, Burst: b.cfg.Log.Burst,
				MaxLineBytes: b.cfg.Log.MaxLineBytes}}
		drv = ub.exec
	case config.KindContainer:
		if ub.ctr, err = b.docker.driver(u, log); err != nil {
			return unitBuild{}, fmt.Errorf("unit %s: %w", u.Name, err)
		}
		drv = ub.ctr
	default:
		return unitBuild{}, fmt.Errorf("unit %s: kind %s is not available in this agent", u.Name, u.Kind)
	}
	ub.spec = supervisor.Spec{
		Name: u.Name, Kind: u.Kind, After: u.After, Driver: drv, Grace: u.Stop.Grace.Duration,
		KeepOnShutdown: u.Container != nil && u.Container.OnAgentExit != "stop",
		Restart: restart.Policy{Mode: restart.Mode(u.Restart.Policy),
			InitialDelay: u.Restart.InitialDelay.Duration, MaxDelay: u.Restart.MaxDelay.Duration,
			StableAfter: u.Restart.StableAfter.Duration, Budget: u.Restart.Budget,
			Window: u.Restart.Window.Duration, NoRestart: u.Restart.NoRestartExitCodes},
	}
	if ub.ctr != nil {
		ub.spec.Reporters = append(ub.spec.Reporters, ub.ctr.Report)
	}
	if p := u.Ready; p != nil {
		ub.spec.ProbeInterval, ub.spec.ProbeTimeout = p.Interval.Duration, p.Timeout.Duration
		switch {
		case p.HTTP != "":
			ub.spec.Prober = &supervisor.HTTPProbe{URL: p.HTTP, Status: p.Status}
		case p.TCP != "":
			ub.spec.Prober = &supervisor.TCPProbe{Addr: p.TCP}
		case p.DockerHealth && ub.ctr != nil:
			ub.spec.Prober = ub.ctr.HealthProber()
		}
	}
	mat := &materializer{store: b.store, unit: u, log: log, redact: redact, stateDir: b.cfg.StateDir}
	ub.spec.Prepare = mat.prepare
	ub.spec.Cleanup = mat.cleanup
	if hook, ok := b.hooks[u.Builtin]; ok && u.Builtin != "" {
		if err := hook(&ub); err != nil {
			return unitBuild{}, fmt.Errorf("unit %s: %w", u.Name, err)
		}
	}
	return ub, nil
}

// materializer resolves a unit's env and files before each start.
type materializer struct {
	store  *secretstore.Store
	unit   config.Unit
	log    *slog.Logger
	redact *supervisor.Redactor
	// stateDir holds the records of the values written to files the unit
	// owns (files.go); "" for none.
	stateDir string
	// secretVals are the values resolved from references at the last prepare.
	secretVals []string
}

// resolve turns a literal or a secret: reference into its value, collecting
// what is missing.
func (m *materializer) resolve(v string, missing *[]string) secretstore.Secret {
	if m.store == nil {
		if _, isRef, _ := secretstore.ParseRef(v); isRef {
			*missing = append(*missing, v+" (the agent has no secrets source; set secrets.source)")
			return secretstore.Secret{}
		}
		return secretstore.New(v)
	}
	s, err := m.store.Resolve(v)
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
	// nil: not written this time.
	contents := make([]*secretstore.Secret, len(m.unit.Files))
	type recorded struct {
		path string
		v    secretstore.Secret
	}
	var toRecord []recorded
	for i, f := range m.unit.Files {
		if !f.OwnedByUnit() {
			v := m.resolve(f.Content, &missing)
			contents[i] = &v
			continue
		}
		// A file the unit owns is written only when the source's value
		// differs from the one the agent last wrote there; without one in
		// the source, the unit's copy stands. It is never removed.
		var none []string
		v := m.resolve(f.Content, &none)
		if len(none) > 0 {
			continue
		}
		write, record := unitOwnedNeedsWrite(m.stateDir, f.Path, v)
		if write {
			contents[i] = &v
		}
		if write || record {
			toRecord = append(toRecord, recorded{f.Path, v})
		}
	}
	if len(missing) > 0 {
		return nil, &supervisor.BlockedError{Reason: strings.Join(missing, "; ")}
	}
	m.redact.Set(m.secretVals)
	if err := writeFiles(m.unit, contents, m.log); err != nil {
		return nil, err
	}
	for _, r := range toRecord {
		if err := recordWritten(m.stateDir, r.path, r.v); err != nil {
			return nil, err
		}
	}
	return env, nil
}

func (m *materializer) cleanup() { removeFiles(m.unit, m.log) }
