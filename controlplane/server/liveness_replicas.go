package server

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// replicas is the liveness of several control planes sharing one
// PostgreSQL database: every replica flushes the heartbeats it took, and the
// one holding the sweeper lock judges silence from the database.
type replicas struct {
	s      *Server
	shared store.Shared
	leader atomic.Bool
	counts statusCounts // stored host counts

	// Owned by the tick goroutine (advance).
	synced    time.Time
	wasLeader bool
}

func (r *replicas) authenticate(ctx context.Context, id, token string, now time.Time) (*hostState, bool) {
	h := r.s.hosts.get(id)
	if h == nil {
		h = r.load(ctx, id) // registered at another replica
	}
	if h == nil {
		return nil, false
	}
	if h.tokenMatches(token) {
		return h, true
	}
	// Registered again at another replica?
	return h, r.reload(ctx, h, now) && h.tokenMatches(token)
}

// returned: the flush records the return (FlushShared turns a stored
// offline host with a newer heartbeat online, with its event).
func (*replicas) returned(h *hostState, _ time.Time) *store.Event {
	h.status = store.StatusOnline
	return nil
}

// sweep runs on every replica; only the holder of the sweeper lock judges,
// from the database every replica flushes into.
func (r *replicas) sweep(ctx context.Context, now time.Time) {
	s := r.s
	if !r.lead(ctx) {
		return
	}
	after := s.offlineAfter()
	if now.Sub(s.started) <= s.cfg.RestartHold {
		return // after our own restart, one full window before anyone is offline
	}
	if now.Sub(r.shared.LastFailure()) <= after {
		return // the database may lack flushes from its outage: one full window
	}
	cutoff := now.Add(-after)
	c, err := r.shared.Census(ctx, now.Add(-s.suspectAfter(s.cfg.FlushWindow)), cutoff)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("sweep: census failed; retrying next second", "err", err)
		}
		return
	}
	if s.massSilence(c.Online, c.Silent) || c.Overdue == 0 {
		return
	}
	hosts, err := r.shared.MarkOffline(ctx, cutoff, now)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("sweep: mark offline failed; retrying next second", "err", err)
		}
		return
	}
	for _, h := range hosts {
		if st := s.hosts.get(h.ID); st != nil {
			st.mu.Lock()
			if st.status == store.StatusOnline && !st.lastSeen.After(h.LastSeen) {
				st.status = store.StatusOffline
			}
			st.mu.Unlock()
		}
		s.log.Info("host offline", "host", h.ID, "last_seen", h.LastSeen)
	}
	s.m.offline.Add(float64(len(hosts)))
}

// lead takes or checks the sweeper lock, logging when it changes hands.
func (r *replicas) lead(ctx context.Context) bool {
	s := r.s
	lead, err := r.shared.Leader(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("sweeper lock", "err", err)
	}
	if lead != r.leader.Swap(lead) {
		if lead {
			s.lm.leaderTaken.Inc()
			s.lm.leader.Set(1)
			s.log.Info("took the sweeper lock: this replica judges liveness")
		} else {
			s.lm.leader.Set(0)
			s.log.Warn("lost the sweeper lock")
		}
	}
	return lead
}

// window flushes, then picks up channel images another replica set.
func (r *replicas) window(ctx context.Context, _ time.Time) error {
	err := r.s.flush(ctx, func(ctx context.Context, ups []store.LiveUpdate, evs []store.Event) error {
		removed, err := r.shared.FlushShared(ctx, ups, evs)
		if err == nil {
			r.forgetRemoved(removed)
		}
		return err
	})
	r.refreshChannels(ctx)
	return err
}

// advance: only the sweeper-lock holder advances rollouts, from the reports
// every replica flushed; the others reload the stored rollouts to serve the
// same desired state.
func (r *replicas) advance(ctx context.Context) {
	s := r.s
	now := time.Now()
	due := now.Sub(r.synced) >= s.cfg.FlushWindow
	leader := r.judges()
	if due || (leader && !r.wasLeader) {
		r.synced = now
		if err := s.rollouts.Reload(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reload rollouts failed; retrying", "err", err)
		}
		if leader && s.rollouts.Active() {
			r.loadReports(ctx)
		}
	}
	r.wasLeader = leader
	if leader {
		s.rollouts.Tick(ctx)
	}
}

// loadReports feeds the rollouts the stored reports of hosts, all replicas'
// flushes included, except where this replica holds a newer one not yet
// flushed.
func (r *replicas) loadReports(ctx context.Context) {
	s := r.s
	hosts, err := s.store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return
	}
	for _, h := range hosts {
		if h.Report == "" {
			continue
		}
		if st := s.hosts.get(h.ID); st != nil {
			st.mu.Lock()
			local := st.report != nil
			st.mu.Unlock()
			if local {
				continue
			}
		}
		var rep api.HeartbeatRequest
		if json.Unmarshal([]byte(h.Report), &rep) == nil {
			s.rollouts.Observe(h.ID, &rep)
		}
	}
}

// status: other replicas change statuses, so the stored one is the truth.
func (*replicas) status(_, stored string) string { return stored }

func (r *replicas) online(ctx context.Context, channel string) ([]string, error) {
	hosts, err := r.s.store.ListHosts(ctx, store.HostFilter{Channel: channel, Status: store.StatusOnline})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, h.ID)
	}
	return out, nil
}

// judges while this replica holds the sweeper lock.
func (r *replicas) judges() bool { return r.leader.Load() }

func (r *replicas) close() { r.shared.Resign() }

// forgetRemoved marks hosts another replica deprovisioned.
func (r *replicas) forgetRemoved(ids []string) {
	for _, id := range ids {
		if h := r.s.hosts.get(id); h != nil {
			h.mu.Lock()
			h.status, h.dirtyStatus, h.report = store.StatusRemoved, false, nil
			h.mu.Unlock()
		}
	}
}

// load loads a host another replica registered.
func (r *replicas) load(ctx context.Context, id string) *hostState {
	s := r.s
	if !idRE.MatchString(id) {
		return nil
	}
	h, err := s.store.GetHost(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			s.log.Warn("load host from shared storage", "host", id, "err", err)
		}
		return nil
	}
	st := newHostState(h)
	st.reloaded = s.cfg.Now()
	return s.hosts.putIfAbsent(st)
}

// reloadEvery bounds how often a host that presents an unknown token is
// read again from shared storage.
const reloadEvery = 100 * time.Millisecond

// reload refreshes a host's token and status from shared storage (another
// replica may have registered it again), at most once per reloadEvery. It
// reports whether anything was reloaded.
func (r *replicas) reload(ctx context.Context, st *hostState, now time.Time) bool {
	st.mu.Lock()
	if now.Sub(st.reloaded) < reloadEvery {
		st.mu.Unlock()
		return false
	}
	st.reloaded = now
	st.mu.Unlock()
	h, err := r.s.store.GetHost(ctx, st.id)
	if err != nil {
		return false
	}
	st.mu.Lock()
	st.tokenHash, st.channel = h.TokenHash, h.Channel
	if h.Status == store.StatusRemoved {
		st.status = store.StatusRemoved
	}
	st.mu.Unlock()
	return true
}

// refreshChannels picks up channel images another replica set.
func (r *replicas) refreshChannels(ctx context.Context) {
	s := r.s
	chans, err := s.store.Channels(ctx)
	if err != nil {
		return
	}
	for _, c := range chans {
		s.chMu.RLock()
		cur, ok := s.channels[c.Name]
		s.chMu.RUnlock()
		if !ok || cur.Revision != c.Revision {
			s.setChannel(c)
		}
	}
}

// statusCounts caches the stored host counts by status for a second, so
// that one scrape of /metrics reads them once.
type statusCounts struct {
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

// count is the number of stored hosts with status (-1 when it cannot be
// read).
func (r *replicas) count(status string) int {
	c := &r.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		counts, err := r.shared.CountByStatus(ctx)
		if err != nil {
			return -1
		}
		c.at, c.counts = time.Now(), counts
	}
	return c.counts[status]
}
