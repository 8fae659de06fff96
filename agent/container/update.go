//go:build unix

package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/config"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// EnvFunc materialises a unit's env (KEY=VALUE, secrets resolved) for a new
// container; it runs on every (re)creation so env is never frozen.
type EnvFunc func(ctx context.Context) ([]string, error)

// ErrNotPinned is returned for a desired image given by tag.
var ErrNotPinned = errors.New("desired image is not pinned by digest")

// RolledBackError says an update was rolled back and why.
type RolledBackError struct {
	Image  string
	Reason string
}

// Error names the image and the reason.
func (e *RolledBackError) Error() string {
	return "update to " + e.Image + " rolled back: " + e.Reason
}

// Wants reports whether desired differs from what the unit runs and should
// be applied. A tag is refused (ErrNotPinned); a unit whose update policy is
// never wants nothing; an image that was rolled back is not wanted again
// until the desired state has named another image in between.
func (d *Driver) Wants(desired string) (bool, error) {
	if !config.IsDigestPinned(desired) {
		return false, fmt.Errorf("unit %s: %w: %q (use repo@sha256:<digest>)", d.spec.Unit, ErrNotPinned, desired)
	}
	if d.spec.UpdatePolicy == config.UpdateNever {
		return false, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.st.Bad != "" && d.st.Bad != desired {
		// The desired state changed: the bad image may be retried later.
		d.st.Bad, d.st.BadReason = "", ""
		if err := saveState(d.statePath, d.st); err != nil {
			return false, err
		}
	}
	return desired != d.currentLocked() && desired != d.st.Bad, nil
}

// UpdateFunc adapts Update to supervisor.Supervisor.Replace.
func (d *Driver) UpdateFunc(desired string, env EnvFunc, ready supervisor.Prober) supervisor.ReplaceFunc {
	return func(ctx context.Context, old supervisor.Instance) (supervisor.Instance, error) {
		return d.Update(ctx, old, desired, env, ready)
	}
}

// Update replaces the running instance old with a container of desired
// (pulling it first, while old serves) and returns the instance to supervise
// from now on: the new one once ready proves it, or old restarted after a
// rollback (with a *RolledBackError). If the pull fails, old is returned
// untouched with the error.
func (d *Driver) Update(ctx context.Context, old supervisor.Instance, desired string, env EnvFunc, ready supervisor.Prober) (supervisor.Instance, error) {
	d.op.Lock()
	defer d.op.Unlock()
	if want, err := d.Wants(desired); err != nil || !want {
		return old, err
	}
	oldID, err := d.containerID(ctx, old)
	if err != nil {
		return old, err
	}
	from := d.CurrentImage()
	j := &journal{ID: newUpdateID(), From: from, To: desired, OldID: oldID, Started: time.Now().UTC()}
	log := d.log.With("update", j.ID, "from", from, "to", desired)

	d.setPhase(PhasePulling, from, desired, "")
	if err := d.step(j, stepPulling); err != nil {
		return old, d.abandon(ctx, j, err)
	}
	if err := d.ensureImage(ctx, desired); err != nil {
		return old, d.abandon(ctx, j, fmt.Errorf("unit %s: %w", d.spec.Unit, err))
	}
	envv, err := env(ctx)
	if err == nil {
		envv, err = d.withSecretFiles(envv)
	}
	if err != nil {
		return old, d.abandon(ctx, j, fmt.Errorf("unit %s: materialise env: %w", d.spec.Unit, err))
	}

	// The new container is created while the old one still serves (create
	// binds no port), so the downtime is only stop old + start new.
	d.setPhase(PhaseStarting, from, desired, "")
	if err := d.step(j, stepCreatingNew); err != nil {
		return old, d.abandon(ctx, j, err)
	}
	if err := d.createNew(ctx, j, envv); err != nil {
		return old, d.abandon(ctx, j, fmt.Errorf("unit %s: %w", d.spec.Unit, err))
	}
	if err := d.step(j, stepStoppingOld); err != nil {
		return old, d.abandon(ctx, j, err)
	}
	if err := old.Stop(ctx, d.spec.stopGrace()); err != nil {
		return d.rollback(ctx, j, nil, "stop old container: "+err.Error(), false)
	}
	if err := d.step(j, stepStartingNew); err != nil {
		return d.rollback(ctx, j, nil, err.Error(), false)
	}
	if err := d.opts.Client.startContainer(ctx, j.NewID); err != nil {
		return d.rollback(ctx, j, nil, fmt.Sprintf("start container %s: %v", short(j.NewID), err), false)
	}
	newIn := watch(d.opts.Client, j.NewID, j.To)
	d.setCurrent(j.NewID)

	d.setPhase(PhaseWaiting, from, desired, "")
	if err := d.step(j, stepWaiting); err != nil {
		return d.rollback(ctx, j, newIn, err.Error(), false)
	}
	ok, reason := d.waitReady(ctx, newIn, ready)
	if !ok {
		return d.rollback(ctx, j, newIn, reason, ctx.Err() == nil)
	}
	if err := d.step(j, stepCommitting); err != nil {
		return d.rollback(ctx, j, newIn, err.Error(), false)
	}
	if err := d.commit(ctx, j); err != nil {
		log.Error("update committed but cleanup failed", "err", err)
	}
	log.Info("update committed", "container", newIn.ID())
	return newIn, nil
}

// step journals that the update enters s, then runs the test hook. An
// error means the journal could not be written; the caller undoes the step.
func (d *Driver) step(j *journal, s string) error {
	d.log.Debug("update step", "update", j.ID, "step", s, "elapsed", time.Since(j.Started))
	j.Step = s
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	jc := *j
	st.Pending = &jc
	if err := d.commitState(st); err != nil {
		return err
	}
	if d.hook != nil {
		d.hook(s)
	}
	return nil
}

// abandon ends an update that never touched the running container,
// removing a new container it may have created.
func (d *Driver) abandon(ctx context.Context, j *journal, err error) error {
	d.setPhase(PhaseFailed, j.From, j.To, err.Error())
	if rerr := d.removeUpdateContainers(context.WithoutCancel(ctx), j); rerr != nil {
		return errors.Join(err, rerr) // the journal stays: the next Start settles it
	}
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	st.Pending = nil
	if serr := d.commitState(st); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

func (d *Driver) containerID(ctx context.Context, in supervisor.Instance) (string, error) {
	if in == nil {
		return "", fmt.Errorf("unit %s has no running container to update", d.spec.Unit)
	}
	if ci, ok := in.(*Instance); ok {
		return ci.ContainerID(), nil
	}
	c, err := d.opts.Client.inspectContainer(ctx, in.ID())
	if err != nil {
		return "", fmt.Errorf("inspect container %s: %w", in.ID(), err)
	}
	return c.ID, nil
}

// createNew creates the new container (not started), journalling its ID.
func (d *Driver) createNew(ctx context.Context, j *journal, env []string) error {
	id, err := d.create(ctx, j.To, env, d.hash(j.To, env), j.ID)
	if err != nil {
		return err
	}
	j.NewID = id
	return d.step(j, stepCreatingNew)
}

// maxProbes bounds the readiness probes in flight during an update.
const maxProbes = 4

type probeResult struct {
	ok     bool
	detail string
}

// waitReady probes ready every ProbeInterval until it passes, the container
// exits, the window ends or ctx is cancelled; the reason says which. Probes
// overlap (up to maxProbes), so one connection stalled while the container's
// network comes up does not delay the verdict.
func (d *Driver) waitReady(ctx context.Context, in *Instance, ready supervisor.Prober) (bool, string) {
	window := time.NewTimer(d.opts.UpdateWindow)
	defer window.Stop()
	tick := time.NewTicker(d.opts.ProbeInterval)
	defer tick.Stop()
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	results := make(chan probeResult, maxProbes)
	inflight := 0
	launch := func() {
		inflight++
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, done := context.WithTimeout(pctx, probeTimeout)
			defer done()
			ok, detail, err := ready.Ready(c)
			if err != nil {
				detail += ": " + err.Error()
			}
			results <- probeResult{ok, detail}
		}()
	}
	last := "no probe answered yet"
	launch()
	for {
		select {
		case r := <-results:
			inflight--
			if r.ok {
				return true, ""
			}
			last = r.detail
		case <-tick.C:
			if inflight < maxProbes {
				launch()
			}
		case <-in.Done():
			return false, "new container exited (" + in.Exit().String() + ") before it was ready"
		case <-window.C:
			return false, fmt.Sprintf("not ready within %s (last probe: %s)", d.opts.UpdateWindow, last)
		case <-ctx.Done():
			return false, "update interrupted: " + ctx.Err().Error()
		}
	}
}

// probeTimeout bounds one readiness probe during an update.
const probeTimeout = 5 * time.Second

// rollback removes the new container (if any), restarts the old one and,
// if markBad, remembers desired as bad. It runs on a fresh context so a
// cancelled update still leaves the old version running.
func (d *Driver) rollback(ctx context.Context, j *journal, newIn *Instance, reason string, markBad bool) (supervisor.Instance, error) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*d.spec.stopGrace()+time.Minute)
	defer cancel()
	j.Reason = reason
	if markBad {
		if err := d.step(j, stepRollingBack); err != nil {
			// Without the journal a crash now would retry the bad image once
			// more; the rollback itself still goes ahead.
			d.log.Error("journal rollback", "err", err)
		}
	}
	d.log.Warn("rolling back update", "from", j.From, "to", j.To, "reason", reason)
	rerr := d.removeUpdateContainers(rctx, j)
	if newIn != nil {
		newIn.Detach()
	}
	if rerr == nil {
		rerr = d.opts.Client.startContainer(rctx, j.OldID)
	}
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	if markBad {
		st.Bad, st.BadReason = j.To, reason
	}
	st.Pending = nil
	if rerr != nil {
		// Leave the journal: the next Start settles it.
		d.setPhase(PhaseRolledBack, j.From, j.To, reason+"; restarting the old container failed: "+rerr.Error())
		return nil, fmt.Errorf("unit %s: roll back to %s: %w", d.spec.Unit, j.From, rerr)
	}
	d.setPhase(PhaseRolledBack, j.From, j.To, reason)
	d.setCurrent(j.OldID)
	var err error = &RolledBackError{Image: j.To, Reason: reason}
	if serr := d.commitState(st); serr != nil {
		// The old version runs; the stale journal is settled at next Start.
		err = errors.Join(err, serr)
	}
	return watch(d.opts.Client, j.OldID, j.From), err
}

// commit removes the old container, keeps From as the one rollback image
// and drops the image before it.
func (d *Driver) commit(ctx context.Context, j *journal) error {
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	drop := st.Previous
	st.Current, st.Previous, st.Bad, st.BadReason, st.Pending = j.To, j.From, "", "", nil
	err := d.remove(ctx, j.OldID, false)
	if serr := d.commitState(st); serr != nil {
		return errors.Join(err, serr)
	}
	d.setPhase(PhaseCommitted, j.From, j.To, "")
	if drop != "" && drop != j.To && drop != j.From && drop != d.spec.Image {
		if ierr := d.opts.Client.removeImage(ctx, drop); ierr != nil {
			d.log.Info("old image kept", "image", drop, "err", ierr)
		}
	}
	return err
}

func newUpdateID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
