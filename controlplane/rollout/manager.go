package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Errors of the admin operations; match with errors.Is.
var (
	// ErrNoRollout: the channel has no rollout.
	ErrNoRollout = errors.New("channel has no rollout")
	// ErrState: the operation does not apply in the rollout's state.
	ErrState = errors.New("operation not allowed in the rollout's state")
	// ErrInvalid: the request is invalid; the message names the field.
	ErrInvalid = errors.New("invalid rollout request")
)

// Store is what the manager needs from the control plane's store.
type Store interface {
	SaveRollout(ctx context.Context, r store.RolloutRecord) (store.RolloutRecord, error)
	LatestRollouts(ctx context.Context) ([]store.RolloutRecord, error)
	SetChannelImages(ctx context.Context, name string, images map[string]string) (store.Channel, error)
	Channels(ctx context.Context) ([]store.Channel, error)
}

// Options configure a Manager. Store and Hosts are required.
type Options struct {
	Store Store
	// Hosts lists the IDs of the channel's online hosts, the ones a new
	// rollout plans its waves over.
	Hosts func(ctx context.Context, channel string) ([]string, error)
	// ChannelChanged is told each new channel revision the manager writes.
	ChannelChanged func(store.Channel)
	// Emit records events (host ID may be empty for channel-wide ones).
	Emit func(...store.Event)
	// Defaults fill the zero fields of a request's policy.
	Defaults Policy
	Logger   *slog.Logger
	Now      func() time.Time
}

// Manager keeps the latest rollout of every channel, advances them from
// heartbeat reports, and persists every change.
type Manager struct {
	o   Options
	log *slog.Logger

	mu       sync.Mutex // guards rollouts and writes of them
	rollouts map[string]*Rollout

	repMu   sync.RWMutex
	reports map[string]*api.HeartbeatRequest

	// gen changes whenever any host's desired state may have changed.
	gen atomic.Uint64
}

// New loads the latest rollout of every channel from the store.
func New(ctx context.Context, o Options) (*Manager, error) {
	if o.Store == nil || o.Hosts == nil {
		return nil, errors.New("rollout: Store and Hosts are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Emit == nil {
		o.Emit = func(...store.Event) {}
	}
	if o.ChannelChanged == nil {
		o.ChannelChanged = func(store.Channel) {}
	}
	o.Defaults = withDefaults(o.Defaults, Policy{Canary: DefaultCanary, BatchPercent: DefaultBatchPercent,
		BakeMS: DefaultBake.Milliseconds(), WaveTimeoutMS: DefaultWaveTimeout.Milliseconds()})
	m := &Manager{o: o, log: o.Logger, rollouts: map[string]*Rollout{}, reports: map[string]*api.HeartbeatRequest{}}
	recs, err := o.Store.LatestRollouts(ctx)
	if err != nil {
		return nil, fmt.Errorf("load rollouts: %w", err)
	}
	for _, rec := range recs {
		var r Rollout
		if err := json.Unmarshal([]byte(rec.Doc), &r); err != nil {
			return nil, fmt.Errorf("rollout %d of channel %s: stored document: %w", rec.ID, rec.Channel, err)
		}
		r.ID, r.Version = rec.ID, rec.Version
		m.rollouts[rec.Channel] = &r
	}
	return m, nil
}

// Reload replaces the in-memory rollouts with the stored ones: another
// replica may have started or changed one.
func (m *Manager) Reload(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reloadLocked(ctx)
}

func (m *Manager) reloadLocked(ctx context.Context) error {
	recs, err := m.o.Store.LatestRollouts(ctx)
	if err != nil {
		return fmt.Errorf("reload rollouts: %w", err)
	}
	changed := false
	for _, rec := range recs {
		var r Rollout
		if err := json.Unmarshal([]byte(rec.Doc), &r); err != nil {
			return fmt.Errorf("rollout %d of channel %s: stored document: %w", rec.ID, rec.Channel, err)
		}
		r.ID, r.Version = rec.ID, rec.Version
		if cur := m.rollouts[rec.Channel]; cur != nil && reflect.DeepEqual(clone(cur), clone(&r)) {
			continue
		}
		m.rollouts[rec.Channel] = &r
		changed = true
	}
	if changed {
		m.gen.Add(1)
	}
	return nil
}

// Active reports whether any rollout is rolling.
func (m *Manager) Active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.rollouts {
		if r.State == StateRolling {
			return true
		}
	}
	return false
}

// Observe records a host's latest heartbeat report.
func (m *Manager) Observe(hostID string, rep *api.HeartbeatRequest) {
	m.repMu.Lock()
	m.reports[hostID] = rep
	m.repMu.Unlock()
}

func (m *Manager) report(hostID string) *api.HeartbeatRequest {
	m.repMu.RLock()
	defer m.repMu.RUnlock()
	return m.reports[hostID]
}

// Generation changes whenever a desired state served by Desired may change.
func (m *Manager) Generation() uint64 { return m.gen.Load() }

// Desired returns the desired state of a host on channel when the channel's
// current revision (chanRev) belongs to its rollout; ok is false otherwise
// and the channel's own images apply. key names the variant for caching.
func (m *Manager) Desired(channel, hostID string, chanRev int64) (key string, ds api.DesiredState, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rollouts[channel]
	if r == nil || (chanRev != r.Revision && chanRev != r.RollbackRevision) {
		return "", api.DesiredState{}, false
	}
	key, ds = Desired(r, hostID)
	return key, ds, true
}

// Get returns a copy of the channel's latest rollout.
func (m *Manager) Get(channel string) (Rollout, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rollouts[channel]
	if r == nil {
		return Rollout{}, fmt.Errorf("channel %s: %w", channel, ErrNoRollout)
	}
	return clone(r), nil
}

// List returns copies of every channel's latest rollout.
func (m *Manager) List() []Rollout {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Rollout, 0, len(m.rollouts))
	for _, r := range m.rollouts {
		out = append(out, clone(r))
	}
	return out
}

func clone(r *Rollout) Rollout {
	b, _ := json.Marshal(r)
	var c Rollout
	_ = json.Unmarshal(b, &c)
	return c
}

// save persists r (inserting it when new). m.mu must be held.
func (m *Manager) save(ctx context.Context, r *Rollout) error {
	r.UpdatedAt = m.o.Now().UTC()
	doc, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode rollout: %w", err)
	}
	rec, err := m.o.Store.SaveRollout(ctx, store.RolloutRecord{ID: r.ID, Channel: r.Channel, State: r.State,
		Doc: string(doc), Version: r.Version, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt})
	if errors.Is(err, store.ErrStale) {
		// Another replica changed it: take its version.
		if rerr := m.reloadLocked(ctx); rerr != nil {
			m.log.Warn("reload after a concurrent change failed", "err", rerr)
		}
		return fmt.Errorf("%w: the rollout of channel %s changed on another replica; look again and retry", ErrState, r.Channel)
	}
	if err != nil {
		return err
	}
	r.ID, r.Version = rec.ID, rec.Version
	m.gen.Add(1)
	return nil
}

// Start sets new images on channel and starts rolling them out. A rollout
// still in progress on the channel is superseded.
func (m *Manager) Start(ctx context.Context, channel string, req Request) (Rollout, error) {
	if err := ValidateImages(req.Images); err != nil {
		return Rollout{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	p := withDefaults(req.RolloutPolicy, m.o.Defaults)
	if err := p.Validate(); err != nil {
		return Rollout{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	hosts, err := m.o.Hosts(ctx, channel)
	if err != nil {
		return Rollout{}, fmt.Errorf("list hosts of channel %s: %w", channel, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, err := m.supersede(ctx, channel)
	if err != nil {
		return Rollout{}, err
	}
	to := maps.Clone(cur.Images)
	if to == nil {
		to = map[string]string{}
	}
	maps.Copy(to, req.Images)
	c, err := m.o.Store.SetChannelImages(ctx, channel, to)
	if err != nil {
		return Rollout{}, err
	}
	now := m.o.Now().UTC()
	r := &Rollout{Channel: channel, State: StateRolling, From: cur.Images, FromRevision: cur.Revision,
		To: to, Revision: c.Revision, Policy: p, Waves: Plan(hosts, p), CreatedAt: now}
	if r.From == nil {
		r.From = map[string]string{}
	}
	Step(r, now, m.report)
	if err := m.save(ctx, r); err != nil {
		return Rollout{}, err
	}
	m.rollouts[channel] = r
	m.o.ChannelChanged(c)
	m.log.Info("rollout started", "channel", channel, "rollout", r.ID, "images", describe(req.Images), "waves", len(r.Waves))
	m.o.Emit(store.Event{Type: "rollout_started", Detail: fmt.Sprintf("channel %s rollout %d: %s in %d waves", channel, r.ID, describe(req.Images), len(r.Waves)), At: now})
	return clone(r), nil
}

// supersede halts the channel's rollout in progress, if any, and returns
// the channel as stored. m.mu must be held.
func (m *Manager) supersede(ctx context.Context, channel string) (store.Channel, error) {
	chans, err := m.o.Store.Channels(ctx)
	if err != nil {
		return store.Channel{}, err
	}
	var cur store.Channel
	for _, c := range chans {
		if c.Name == channel {
			cur = c
		}
	}
	if prev := m.rollouts[channel]; prev != nil && (prev.State == StateRolling || prev.State == StatePaused) {
		prev.State, prev.Reason = StateHalted, "superseded by a new rollout"
		if err := m.save(ctx, prev); err != nil {
			return store.Channel{}, err
		}
	}
	return cur, nil
}

// Set replaces the channel's images at once (PUT /v1/admin/channels/{name}):
// a rollout of one wave, every online host of the channel, completed as it
// starts, so every host is served the images now and Rollback restores the
// previous ones. A rollout in progress on the channel is superseded.
func (m *Manager) Set(ctx context.Context, channel string, images map[string]string) (Rollout, error) {
	if err := ValidateImages(images); err != nil {
		return Rollout{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	hosts, err := m.o.Hosts(ctx, channel)
	if err != nil {
		return Rollout{}, fmt.Errorf("list hosts of channel %s: %w", channel, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, err := m.supersede(ctx, channel)
	if err != nil {
		return Rollout{}, err
	}
	c, err := m.o.Store.SetChannelImages(ctx, channel, images)
	if err != nil {
		return Rollout{}, err
	}
	now := m.o.Now().UTC()
	p := m.o.Defaults
	p.Canary, p.BatchPercent, p.BakeMS = 0, 100, 0
	wave := Plan(hosts, p)
	for i := range wave {
		wave[i].StartedAt, wave[i].DoneAt = now, now
	}
	r := &Rollout{Channel: channel, State: StateCompleted, From: cur.Images, FromRevision: cur.Revision,
		To: maps.Clone(images), Revision: c.Revision, Policy: p, Waves: wave, Current: len(wave), CreatedAt: now}
	if r.From == nil {
		r.From = map[string]string{}
	}
	if err := m.save(ctx, r); err != nil {
		return Rollout{}, err
	}
	m.rollouts[channel] = r
	m.o.ChannelChanged(c)
	m.log.Info("channel images set", "channel", channel, "rollout", r.ID, "images", describe(images), "hosts", len(hosts))
	return clone(r), nil
}

// Pause stops a rolling rollout from starting more waves.
func (m *Manager) Pause(ctx context.Context, channel, reason string) (Rollout, error) {
	return m.change(ctx, channel, func(r *Rollout, now time.Time) error {
		if r.State != StateRolling {
			return fmt.Errorf("pause: rollout %d is %s: %w", r.ID, r.State, ErrState)
		}
		r.State, r.Reason = StatePaused, reason
		return nil
	})
}

// Resume continues a paused or halted rollout; the current wave starts its
// timeout and bake again.
func (m *Manager) Resume(ctx context.Context, channel string) (Rollout, error) {
	return m.change(ctx, channel, func(r *Rollout, now time.Time) error {
		if r.State != StatePaused && r.State != StateHalted {
			return fmt.Errorf("resume: rollout %d is %s: %w", r.ID, r.State, ErrState)
		}
		r.State, r.Reason = StateRolling, ""
		if r.Current < len(r.Waves) {
			w := &r.Waves[r.Current]
			if !w.StartedAt.IsZero() {
				w.StartedAt = now
			}
			w.ReadyAt = time.Time{}
		}
		Step(r, now, m.report)
		return nil
	})
}

// Rollback serves the channel's previous images to every host at a new
// revision.
func (m *Manager) Rollback(ctx context.Context, channel, reason string) (Rollout, error) {
	var c store.Channel
	r, err := m.change(ctx, channel, func(r *Rollout, now time.Time) error {
		if r.State == StateRolledBack {
			return fmt.Errorf("rollback: rollout %d is already rolled back: %w", r.ID, ErrState)
		}
		var err error
		if c, err = m.o.Store.SetChannelImages(ctx, channel, r.From); err != nil {
			return err
		}
		r.State, r.Reason, r.RollbackRevision = StateRolledBack, reason, c.Revision
		return nil
	})
	if err == nil {
		m.o.ChannelChanged(c)
		m.o.Emit(store.Event{Type: "rollout_rolled_back", Detail: fmt.Sprintf("channel %s rollout %d: back to %s", channel, r.ID, describe(r.From)), At: m.o.Now().UTC()})
	}
	return r, err
}

func (m *Manager) change(ctx context.Context, channel string, fn func(*Rollout, time.Time) error) (Rollout, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.rollouts[channel]
	if r == nil {
		return Rollout{}, fmt.Errorf("channel %s: %w", channel, ErrNoRollout)
	}
	old := clone(r)
	if err := fn(r, m.o.Now().UTC()); err != nil {
		*r = old
		return Rollout{}, err
	}
	if err := m.save(ctx, r); err != nil {
		*r = old
		return Rollout{}, err
	}
	m.log.Info("rollout changed", "channel", channel, "rollout", r.ID, "state", r.State, "reason", r.Reason)
	return clone(r), nil
}

// Tick advances every rolling rollout once, persisting and reporting what
// changed. A failed save leaves the rollout as it was, to retry next tick.
func (m *Manager) Tick(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.o.Now().UTC()
	for ch, r := range m.rollouts {
		old := clone(r)
		ts := Step(r, now, m.report)
		if len(ts) == 0 {
			continue
		}
		if err := m.save(ctx, r); err != nil {
			*r = old
			if ctx.Err() == nil {
				m.log.Warn("save rollout failed; retrying", "channel", ch, "rollout", r.ID, "err", err)
			}
			continue
		}
		for _, t := range ts {
			m.transition(r, t, now)
		}
	}
}

func (m *Manager) transition(r *Rollout, t Transition, now time.Time) {
	switch t.Kind {
	case "halted":
		m.log.Warn("rollout halted", "channel", r.Channel, "rollout", r.ID, "host", t.HostID, "reason", t.Detail)
		m.o.Emit(store.Event{HostID: t.HostID, Type: "rollout_halted", Detail: fmt.Sprintf("channel %s rollout %d: %s", r.Channel, r.ID, t.Detail), At: now})
	case "completed":
		m.log.Info("rollout completed", "channel", r.Channel, "rollout", r.ID)
		m.o.Emit(store.Event{Type: "rollout_completed", Detail: fmt.Sprintf("channel %s rollout %d: %s", r.Channel, r.ID, t.Detail), At: now})
	case "wave_started":
		m.log.Info("rollout wave started", "channel", r.Channel, "rollout", r.ID, "detail", t.Detail)
	}
}
