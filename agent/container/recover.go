//go:build unix

package container

import (
	"context"
	"fmt"
)

// Recover settles an update that an earlier agent left unfinished: one that
// had proven the new version ready is committed, any other is undone (its
// new container removed) so the old version runs again at the next Start.
// Start calls it; it is exported for callers that want to settle every unit
// before supervising.
func (d *Driver) Recover(ctx context.Context) error {
	d.op.Lock()
	defer d.op.Unlock()
	return d.recoverLocked(ctx)
}

func (d *Driver) recoverLocked(ctx context.Context) error {
	d.mu.Lock()
	st := d.st
	d.mu.Unlock()
	j := st.Pending
	if j == nil {
		return nil
	}
	log := d.log.With("update", j.ID, "from", j.From, "to", j.To, "step", j.Step)
	if j.Step == stepCommitting {
		log.Info("finishing an interrupted update: the new version was ready")
		if err := d.remove(ctx, j.OldID, true); err != nil {
			return err
		}
		st.Current, st.Previous, st.Bad, st.BadReason = j.To, j.From, "", ""
		st.Pending = nil
		if err := d.commitState(st); err != nil {
			return err
		}
		d.setPhase(PhaseCommitted, j.From, j.To, "finished after an agent restart")
		return nil
	}
	log.Info("undoing an interrupted update: the old version runs again")
	if err := d.removeUpdateContainers(ctx, j); err != nil {
		return err
	}
	reason := "interrupted by an agent restart"
	if j.Step == stepRollingBack {
		st.Bad, st.BadReason = j.To, j.Reason
		reason = j.Reason
	}
	st.Pending = nil
	if err := d.commitState(st); err != nil {
		return err
	}
	d.setPhase(PhaseRolledBack, j.From, j.To, reason)
	return nil
}

// removeUpdateContainers removes the container(s) an update created: by the
// journalled ID and by the update label, in case the agent died between
// creating the container and journalling its ID.
func (d *Driver) removeUpdateContainers(ctx context.Context, j *journal) error {
	cs, err := d.opts.Client.listContainers(ctx, LabelUnit+"="+d.spec.Unit, LabelAgent+"="+d.opts.Agent, LabelUpdate+"="+j.ID)
	if err != nil {
		return fmt.Errorf("list containers of update %s: %w", j.ID, err)
	}
	ids := map[string]bool{}
	if j.NewID != "" {
		ids[j.NewID] = true
	}
	for _, c := range cs {
		ids[c.ID] = true
	}
	for id := range ids {
		if id == j.OldID {
			continue
		}
		if err := d.remove(ctx, id, true); err != nil {
			return err
		}
	}
	return nil
}

// commitState saves st and makes it the driver's state.
func (d *Driver) commitState(st unitState) error {
	if err := saveState(d.statePath, st); err != nil {
		return err
	}
	d.mu.Lock()
	d.st = st
	d.mu.Unlock()
	return nil
}
