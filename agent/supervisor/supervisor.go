//go:build unix

// Package supervisor keeps a host's units running: it starts them in
// dependency order once their dependencies are ready, probes their readiness,
// restarts them by their restart policy, and stops them in reverse order.
//
// A unit's workload is started by a Driver (a process, a container); the
// supervisor owns one goroutine per unit, and every wait is bounded.
//
// The agent runs on Linux and compiles on other Unix systems for
// development (unix_other.go). Windows is excluded on purpose: this package
// and every agent package built on it carry //go:build unix.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/restart"
)

// State is where a unit is in its life.
type State string

// Unit states.
const (
	Waiting  State = "waiting"  // for its dependencies
	Blocked  State = "blocked"  // cannot start: e.g. a required secret is missing
	Starting State = "starting" // running, readiness not known yet
	Running  State = "running"  // running, not ready
	Ready    State = "ready"    // running and ready
	Backoff  State = "backoff"  // exited, waiting to restart
	Failed   State = "failed"   // gave up: budget spent or a permanent exit
	Stopping State = "stopping"
	Stopped  State = "stopped"
)

// Driver runs one unit's workload: a process, a container.
type Driver interface {
	// Start launches the workload with env (KEY=VALUE, secrets resolved) and
	// returns once it runs.
	Start(ctx context.Context, env []string) (Instance, error)
}

// Instance is one running workload.
type Instance interface {
	// ID is shown in status ("pid 1234", a container ID).
	ID() string
	// PID is the local process ID, 0 when there is none.
	PID() int
	// Done is closed once the workload has exited.
	Done() <-chan struct{}
	// Exit reports how it ended; valid after Done.
	Exit() ExitStatus
	// Stop stops it gracefully within grace, then forcibly; it returns once
	// the workload has exited.
	Stop(ctx context.Context, grace time.Duration) error
}

// ExitStatus is how a workload ended.
type ExitStatus struct {
	Code   int
	Signal string
	Err    error
}

func (e ExitStatus) String() string {
	switch {
	case e.Signal != "":
		return "killed by signal " + e.Signal
	case e.Err != nil:
		return e.Err.Error()
	default:
		return "exit code " + strconv.Itoa(e.Code)
	}
}

// Prober decides readiness.
type Prober interface {
	Ready(ctx context.Context) (ok bool, detail string, err error)
}

// BlockedError is returned by Spec.Prepare when the unit cannot start until
// something outside it changes (a missing secret). The unit waits in Blocked
// until Poke.
type BlockedError struct{ Reason string }

func (e *BlockedError) Error() string { return e.Reason }

// Spec is everything the supervisor needs to run one unit.
type Spec struct {
	Name  string
	Kind  string
	After []string

	Driver        Driver
	Prober        Prober
	ProbeInterval time.Duration
	ProbeTimeout  time.Duration
	// NotReadyRestart restarts a running unit that has not been ready for
	// this long (0: never; readiness only gates dependents).
	NotReadyRestart time.Duration

	Grace   time.Duration
	Restart restart.Policy
	// KeepOnShutdown leaves the workload running when the agent itself shuts
	// down (an instance with a Detach method: containers), so an agent
	// restart or upgrade does not restart it. StopUnits still stops it.
	KeepOnShutdown bool

	// Prepare returns the workload's environment; it runs before each start.
	Prepare func(ctx context.Context) ([]string, error)
	// Cleanup runs when the unit stops for good (secret files removed).
	Cleanup func()
	// Reporters fill in the unit status's facets (image, tunnel,
	// registration), in order.
	Reporters []Reporter
}

// Supervisor runs a set of units.
type Supervisor struct {
	log   *slog.Logger
	units map[string]*unit
	order []string // dependencies first

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change

	rnd func() float64
	now func() time.Time
	wg  sync.WaitGroup
	// shutdown is set by Stop: the agent is exiting.
	shutdown atomic.Bool
	// lastTurn is when Run's main loop last turned (Unix ns).
	lastTurn atomic.Int64
}

// detacher is an Instance that can be left running.
type detacher interface{ Detach() }

// New checks the specs and returns a supervisor for them.
func New(log *slog.Logger, specs []Spec) (*Supervisor, error) {
	s := &Supervisor{log: log, units: map[string]*unit{}, changed: make(chan struct{}),
		rnd: rand.Float64, now: time.Now}
	for _, sp := range specs {
		if _, dup := s.units[sp.Name]; dup {
			return nil, fmt.Errorf("unit %q defined twice", sp.Name)
		}
		if sp.Driver == nil {
			return nil, fmt.Errorf("unit %q has no driver", sp.Name)
		}
		if sp.ProbeInterval <= 0 {
			sp.ProbeInterval = time.Second
		}
		if sp.ProbeTimeout <= 0 {
			sp.ProbeTimeout = 2 * time.Second
		}
		s.units[sp.Name] = newUnit(s, sp)
	}
	for _, u := range s.units {
		for _, d := range u.spec.After {
			dep, ok := s.units[d]
			if !ok {
				return nil, fmt.Errorf("unit %q depends on unknown unit %q", u.spec.Name, d)
			}
			dep.dependents = append(dep.dependents, u)
		}
	}
	order, err := topoOrder(specs)
	if err != nil {
		return nil, err
	}
	s.order = order
	return s, nil
}

// Start launches every unit; each waits for its dependencies to be ready.
func (s *Supervisor) Start(ctx context.Context) {
	for _, name := range s.order {
		u := s.units[name]
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(u.exited)
			u.run(ctx)
		}()
	}
}

// Stop stops every unit, each after the units that depend on it, and waits
// for all of them. Each unit gets its own grace period. Units with
// KeepOnShutdown are left running, detached.
func (s *Supervisor) Stop() {
	s.shutdown.Store(true)
	var wg sync.WaitGroup
	for _, u := range s.units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range u.dependents {
				<-d.exited
			}
			u.requestStop()
			<-u.exited
		}()
	}
	wg.Wait()
	s.wg.Wait()
}

// StopUnits stops the named units and those depending on them, in reverse
// dependency order, and keeps them stopped (deprovisioned host, removed workspace).
func (s *Supervisor) StopUnits(names ...string) {
	var wg sync.WaitGroup
	for _, n := range names {
		if u, ok := s.units[n]; ok {
			wg.Add(1)
			go func() { defer wg.Done(); s.stopTree(u) }()
		}
	}
	wg.Wait()
}

func (s *Supervisor) stopTree(u *unit) {
	var wg sync.WaitGroup
	for _, d := range u.dependents {
		wg.Add(1)
		go func() { defer wg.Done(); s.stopTree(d) }()
	}
	wg.Wait()
	u.requestStop()
	<-u.exited
}

// Restart stops and starts a unit now, outside its restart policy (a secret
// it uses changed). It returns once the unit has been stopped and asked to
// start again; the backoff and budget are not touched.
func (s *Supervisor) Restart(ctx context.Context, name, reason string) error {
	u, ok := s.units[name]
	if !ok {
		return fmt.Errorf("no unit %q", name)
	}
	done := make(chan struct{})
	select {
	case u.restartCh <- restartReq{reason: reason, done: done}:
	case <-u.exited:
		return fmt.Errorf("unit %q is not supervised any more", name)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReplaceFunc swaps a running unit's instance: it gets the running instance
// and returns the one to supervise from now on (a new one, or the old one
// restored after a rollback).
type ReplaceFunc func(ctx context.Context, old Instance) (Instance, error)

// ErrNotRunning is returned by Replace when the unit has no running instance.
var ErrNotRunning = errors.New("unit is not running")

// Replace runs fn inside the unit's loop, so the old instance's exit is not
// taken for a crash. The returned error is fn's.
func (s *Supervisor) Replace(ctx context.Context, name string, fn ReplaceFunc) error {
	u, ok := s.units[name]
	if !ok {
		return fmt.Errorf("no unit %q", name)
	}
	req := replaceReq{fn: fn, reply: make(chan error, 1)}
	select {
	case u.replaceCh <- req:
	case <-u.exited:
		return ErrNotRunning
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-u.exited:
		return ErrNotRunning
	}
}

// Poke makes blocked units try to start again (e.g. after a secret refresh).
func (s *Supervisor) Poke() {
	for _, u := range s.units {
		select {
		case u.poke <- struct{}{}:
		default:
		}
	}
}

// Changed returns a channel closed at the next state change of any unit.
func (s *Supervisor) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// Status returns every unit's status, in dependency order.
func (s *Supervisor) Status() []UnitStatus {
	out := make([]UnitStatus, 0, len(s.order))
	for _, name := range s.order {
		out = append(out, s.units[name].status())
	}
	return out
}

// Names returns the unit names in dependency order.
func (s *Supervisor) Names() []string { return slices.Clone(s.order) }

func (s *Supervisor) notify() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// topoOrder sorts units so dependencies come first, keeping config order
// among independent units.
func topoOrder(specs []Spec) ([]string, error) {
	done := map[string]bool{}
	var out []string
	for len(out) < len(specs) {
		progressed := false
		for _, sp := range specs {
			if done[sp.Name] {
				continue
			}
			ready := true
			for _, d := range sp.After {
				ready = ready && done[d]
			}
			if ready {
				done[sp.Name] = true
				out = append(out, sp.Name)
				progressed = true
			}
		}
		if !progressed {
			return nil, errors.New("units have a dependency cycle")
		}
	}
	return out, nil
}
