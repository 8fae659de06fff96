//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/restart"
)

// UnitStatus is one unit's state as shown by the status API and heartbeats.
type UnitStatus struct {
	Name       string     `json:"name"`
	Kind       string     `json:"kind"`
	State      State      `json:"state"`
	Ready      bool       `json:"ready"`
	Detail     string     `json:"detail,omitempty"`
	PID        int        `json:"pid,omitempty"`
	ID         string     `json:"id,omitempty"`
	Restarts   int        `json:"restarts"`
	LastExit   string     `json:"last_exit,omitempty"`
	Since      time.Time  `json:"since"`
	ReadySince *time.Time `json:"ready_since,omitempty"`
	LastError  string     `json:"last_error,omitempty"`
	// Facets are what the unit's parts report of its workload.
	Facets
}

type restartReq struct {
	reason string
	done   chan struct{}
}

type replaceReq struct {
	fn    ReplaceFunc
	reply chan error
}

// unit is the runtime side of a Spec. Its loop goroutine owns inst; the
// fields under mu are what Status reads.
type unit struct {
	s          *Supervisor
	spec       Spec
	tracker    *restart.Tracker
	dependents []*unit

	stopOnce  sync.Once
	stopCh    chan struct{}
	exited    chan struct{}
	restartCh chan restartReq
	replaceCh chan replaceReq
	poke      chan struct{}

	mu sync.Mutex
	st UnitStatus
}

func newUnit(s *Supervisor, sp Spec) *unit {
	return &unit{s: s, spec: sp, tracker: restart.NewTracker(sp.Restart),
		stopCh: make(chan struct{}), exited: make(chan struct{}),
		restartCh: make(chan restartReq), replaceCh: make(chan replaceReq),
		poke: make(chan struct{}, 1),
		st:   UnitStatus{Name: sp.Name, Kind: sp.Kind, State: Waiting, Since: s.now()}}
}

func (u *unit) requestStop() { u.stopOnce.Do(func() { close(u.stopCh) }) }

func (u *unit) status() UnitStatus {
	u.mu.Lock()
	st := u.st
	u.mu.Unlock()
	for _, r := range u.spec.Reporters {
		r(&st.Facets)
	}
	return st
}

// update changes the status under the lock and wakes waiters, only when
// something they can see changed: a probe answering the same every second
// wakes nobody.
func (u *unit) update(f func(st *UnitStatus)) {
	u.mu.Lock()
	before := u.st
	f(&u.st)
	changed := u.st.State != before.State || u.st.Ready != before.Ready || u.st.Detail != before.Detail ||
		u.st.PID != before.PID || u.st.ID != before.ID || u.st.Restarts != before.Restarts ||
		u.st.LastExit != before.LastExit || u.st.LastError != before.LastError
	if u.st.State != before.State {
		u.st.Since = u.s.now()
	}
	u.mu.Unlock()
	if changed {
		u.s.notify()
	}
}

func (u *unit) setState(st State, detail string) {
	u.update(func(s *UnitStatus) {
		s.State, s.Detail = st, detail
		if st != Ready {
			s.Ready, s.ReadySince = false, nil
		}
		if st != Starting && st != Running && st != Ready {
			s.PID, s.ID = 0, ""
		}
	})
	u.s.log.Debug("unit state", "unit", u.spec.Name, "state", st, "detail", detail)
}

// blockedRetry is how often a blocked unit re-runs its preparation.
const blockedRetry = 2 * time.Second

func (u *unit) detail() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.Detail
}

func (u *unit) state() State {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.st.State
}

// run is the unit's loop: wait for dependencies, prepare, start, watch,
// decide, and again, until asked to stop.
func (u *unit) run(ctx context.Context) {
	defer u.cleanup()
	for {
		if !u.depsReady() {
			u.setState(Waiting, waitingDetail(u.spec.After))
		}
		if !u.waitDeps(ctx) {
			u.setState(Stopped, "")
			return
		}
		exit, startedAt, ok := u.runOnce(ctx)
		if !ok {
			return
		}
		if exit == nil { // restarted on request, not a crash
			continue
		}
		if !u.afterExit(ctx, *exit, startedAt) {
			return
		}
	}
}

// runOnce starts the workload and supervises it until it exits. It returns
// the exit (nil when restarted on request) and false when the unit must end.
func (u *unit) runOnce(ctx context.Context) (*restart.Exit, time.Time, bool) {
	var env []string
	if u.spec.Prepare != nil {
		var err error
		env, err = u.spec.Prepare(ctx)
		var blocked *BlockedError
		if errors.As(err, &blocked) {
			return u.waitBlocked(blocked.Reason)
		}
		if err != nil {
			u.recordError(err)
			return &restart.Exit{Code: -1, StartFailed: true}, time.Time{}, true
		}
	}
	startedAt := u.s.now()
	inst, err := u.spec.Driver.Start(ctx, env)
	if err != nil {
		u.recordError(err)
		u.s.log.Error("unit failed to start", "unit", u.spec.Name, "err", err)
		return &restart.Exit{Code: -1, StartFailed: true}, startedAt, true
	}
	u.update(func(s *UnitStatus) {
		s.State, s.Detail, s.PID, s.ID, s.LastError = Starting, "", inst.PID(), inst.ID(), ""
	})
	u.s.log.Info("unit started", "unit", u.spec.Name, "id", inst.ID())

	for {
		probeCtx, cancelProbe := context.WithCancel(ctx)
		unhealthy := make(chan string, 1)
		var probes sync.WaitGroup
		probes.Add(1)
		go func() { defer probes.Done(); u.probeLoop(probeCtx, unhealthy) }()
		stopProbe := func() { cancelProbe(); probes.Wait() }

		select {
		case <-inst.Done():
			stopProbe()
			ex := inst.Exit()
			u.s.log.Warn("unit exited", "unit", u.spec.Name, "exit", ex.String())
			u.update(func(s *UnitStatus) { s.LastExit = ex.String() })
			return &restart.Exit{Code: ex.Code, Signaled: ex.Signal != ""}, startedAt, true
		case <-u.stopCh:
			stopProbe()
			if dt, ok := inst.(detacher); ok && u.spec.KeepOnShutdown && u.s.shutdown.Load() {
				dt.Detach()
				u.s.log.Info("unit left running while the agent exits", "unit", u.spec.Name, "id", inst.ID())
				u.setState(Stopped, "left running")
				return nil, startedAt, false
			}
			u.stopInstance(inst, "")
			u.setState(Stopped, "")
			return nil, startedAt, false
		case r := <-u.restartCh:
			stopProbe()
			u.s.log.Info("restarting unit", "unit", u.spec.Name, "reason", r.reason)
			u.stopInstance(inst, r.reason)
			close(r.done)
			return nil, startedAt, true
		case why := <-unhealthy:
			stopProbe()
			u.s.log.Warn("unit not ready for too long; restarting", "unit", u.spec.Name, "detail", why)
			u.stopInstance(inst, why)
			u.update(func(s *UnitStatus) { s.LastExit = why })
			return &restart.Exit{Code: -1, Signaled: true}, startedAt, true
		case req := <-u.replaceCh:
			stopProbe()
			inst = u.replace(ctx, inst, req)
		}
	}
}

func (u *unit) replace(ctx context.Context, old Instance, req replaceReq) Instance {
	rctx, cancel := context.WithCancel(ctx)
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		oldDone := old.Done()
		for {
			select {
			case <-u.stopCh:
				cancel()
				return
			case <-oldDone:
				// The replacement stopped the old instance: nothing serves
				// until the new one (or the old one again) proves ready, so
				// the unit is not reported ready meanwhile.
				oldDone = nil
				u.update(func(s *UnitStatus) {
					s.State, s.Ready, s.ReadySince = Starting, false, nil
				})
			case <-rctx.Done():
				return
			}
		}
	}()
	inst, err := req.fn(rctx, old)
	cancel()
	watch.Wait()
	if inst == nil {
		inst = old
	}
	u.update(func(s *UnitStatus) {
		s.State, s.PID, s.ID = Starting, inst.PID(), inst.ID()
		s.Ready, s.ReadySince = false, nil
	})
	req.reply <- err
	return inst
}

func (u *unit) stopInstance(inst Instance, reason string) {
	u.setState(Stopping, reason)
	// A stop is bounded by the grace period plus the forced kill; the
	// background context is deliberate: shutdown must not skip it.
	if err := inst.Stop(context.Background(), u.spec.Grace); err != nil {
		u.s.log.Error("unit stop failed", "unit", u.spec.Name, "err", err)
	}
}

// afterExit applies the restart policy; false means the unit must end.
func (u *unit) afterExit(ctx context.Context, e restart.Exit, startedAt time.Time) bool {
	d := u.tracker.Next(e, startedAt, u.s.now(), u.s.rnd)
	switch d.Verdict {
	case restart.Restart:
		u.setState(Backoff, fmt.Sprintf("restarting in %s", d.Delay.Round(time.Millisecond)))
		t := time.NewTimer(d.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case r := <-u.restartCh:
			close(r.done)
		case <-u.stopCh:
			u.setState(Stopped, "")
			return false
		case <-ctx.Done():
			return false
		}
		u.update(func(s *UnitStatus) { s.Restarts++ })
		return true
	case restart.Failed:
		u.s.log.Error("unit failed", "unit", u.spec.Name, "reason", d.Reason)
		u.setState(Failed, d.Reason)
	default:
		u.s.log.Info("unit finished", "unit", u.spec.Name, "reason", d.Reason)
		u.setState(Stopped, d.Reason)
	}
	u.cleanup()
	// Stay down until stopped or restarted by hand.
	select {
	case r := <-u.restartCh:
		close(r.done)
		u.tracker = restart.NewTracker(u.spec.Restart)
		return true
	case <-u.stopCh:
		return false
	case <-ctx.Done():
		return false
	}
}

func (u *unit) waitBlocked(reason string) (*restart.Exit, time.Time, bool) {
	if u.state() != Blocked || u.detail() != reason {
		u.setState(Blocked, reason)
		// Warn, not Error: a unit waits blocked at every boot until the
		// secrets are loaded, which is no error.
		u.s.log.Warn("unit cannot start yet", "unit", u.spec.Name, "reason", reason)
	}
	// Try again now and then even unpoked: the reason may change (the
	// secrets fetch failed for another cause) or go away.
	t := time.NewTimer(blockedRetry)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, time.Time{}, true
	case <-u.poke:
		return nil, time.Time{}, true
	case r := <-u.restartCh:
		close(r.done)
		return nil, time.Time{}, true
	case <-u.stopCh:
		u.setState(Stopped, "")
		return nil, time.Time{}, false
	}
}

func (u *unit) recordError(err error) {
	u.update(func(s *UnitStatus) { s.LastError = err.Error() })
}

func (u *unit) cleanup() {
	if u.spec.Cleanup != nil {
		u.spec.Cleanup()
	}
}

func (u *unit) depsReady() bool {
	for _, d := range u.spec.After {
		if u.s.units[d].state() != Ready {
			return false
		}
	}
	return true
}

func (u *unit) waitDeps(ctx context.Context) bool {
	for {
		ch := u.s.Changed()
		if u.depsReady() {
			return true
		}
		select {
		case <-ch:
		case <-u.stopCh:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func waitingDetail(after []string) string {
	if len(after) == 0 {
		return ""
	}
	return fmt.Sprintf("waiting for %v to be ready", after)
}

// probeLoop polls readiness until ctx ends. Without a prober a started unit
// is ready at once.
func (u *unit) probeLoop(ctx context.Context, unhealthy chan<- string) {
	if u.spec.Prober == nil {
		u.markReady(true, "")
		return
	}
	notReadySince := u.s.now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, detail, err := probeOnce(ctx, u.spec.Prober, u.spec.ProbeTimeout)
		if ctx.Err() != nil {
			return
		}
		if err != nil && detail == "" {
			detail = err.Error()
		}
		u.markReady(ok, detail)
		now := u.s.now()
		if ok {
			notReadySince = now
		} else if w := u.spec.NotReadyRestart; w > 0 && now.Sub(notReadySince) >= w {
			unhealthy <- fmt.Sprintf("not ready for %s (%s)", w, detail)
			return
		}
		t.Reset(u.spec.ProbeInterval)
	}
}

func (u *unit) markReady(ok bool, detail string) {
	u.update(func(s *UnitStatus) {
		if s.State != Starting && s.State != Running && s.State != Ready {
			return
		}
		s.Detail = detail
		switch {
		case ok && !s.Ready:
			now := u.s.now()
			s.State, s.Ready, s.ReadySince = Ready, true, &now
		case !ok:
			s.State, s.Ready, s.ReadySince = Running, false, nil
		}
	})
}
