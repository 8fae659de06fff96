package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// liveMetrics are the liveness guard's metrics.
type liveMetrics struct {
	shed        prometheus.Counter
	leader      prometheus.Gauge
	leaderTaken prometheus.Counter
	mass        prometheus.Gauge
	silent      prometheus.Gauge
}

func newLiveMetrics(reg *prometheus.Registry) *liveMetrics {
	m := &liveMetrics{
		shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_shed_total", Help: "Agent requests refused with 429 because the control plane was over its request budget.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_sweeper_leader", Help: "1 while this replica runs the liveness sweeper.",
		}),
		leaderTaken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "molecule_cp_sweeper_lock_acquired_total", Help: "Times this replica took the sweeper lock.",
		}),
		mass: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_mass_silence", Help: "1 while too many hosts are silent at once and nobody is marked offline.",
		}),
		silent: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "molecule_cp_silent_hosts", Help: "Online hosts that missed a heartbeat, at the last sweep.",
		}),
	}
	reg.MustRegister(m.shed, m.leader, m.leaderTaken, m.mass, m.silent)
	return m
}

// quietFrom is when silence starts counting for a host not heard since
// the server started: so that nobody is offline before RestartHold passes.
func (s *Server) quietFrom() time.Time {
	return s.started.Add(s.cfg.RestartHold - s.offlineAfter())
}

// suspectAfter is how long a host may be quiet before it counts as silent
// for the mass-silence guard: halfway between the most a live host can be
// quiet (1.1 intervals of jitter, plus a flush window of lag when judged
// from shared storage) and the least every host that fell silent together
// has been quiet when the first of them is overdue (1.9 intervals + grace).
func (s *Server) suspectAfter() time.Duration {
	lag := time.Duration(0)
	if s.shared != nil {
		lag = s.cfg.FlushWindow
	}
	return (3*s.cfg.Interval + s.cfg.Grace + lag) / 2
}

// massSilence reports whether silent of online hosts is a mass silence,
// logging when one starts and ends.
func (s *Server) massSilence(online, silent int) bool {
	s.lm.silent.Set(float64(silent))
	share := s.cfg.MassSilenceShare
	mass := share < 1 && silent >= s.cfg.MassSilenceMin && float64(silent) > share*float64(online)
	if mass != s.inMass.Swap(mass) {
		if mass {
			s.log.Warn("mass silence: too many hosts silent at once; assuming a control-plane fault and marking nobody offline",
				"silent", silent, "online", online, "share", share)
		} else {
			s.log.Info("mass silence over: liveness judged again", "silent", silent, "online", online)
		}
	}
	if mass {
		s.lm.mass.Set(1)
	} else {
		s.lm.mass.Set(0)
	}
	return mass
}

// sweepShared runs on every replica; only the holder of the sweeper lock
// judges, from the database every replica flushes into.
func (s *Server) sweepShared(ctx context.Context, now time.Time) {
	lead, err := s.shared.Leader(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("sweeper lock", "err", err)
	}
	if lead != s.leader.Swap(lead) {
		if lead {
			s.lm.leaderTaken.Inc()
			s.lm.leader.Set(1)
			s.log.Info("took the sweeper lock: this replica judges liveness")
		} else {
			s.lm.leader.Set(0)
			s.log.Warn("lost the sweeper lock")
		}
	}
	if !lead {
		return
	}
	after := s.offlineAfter()
	if now.Sub(s.started) <= s.cfg.RestartHold {
		return // after our own restart, one full window before anyone is offline
	}
	if now.Sub(s.shared.LastFailure()) <= after {
		return // the database may lack flushes from its outage: one full window
	}
	cutoff := now.Add(-after)
	c, err := s.shared.Census(ctx, now.Add(-s.suspectAfter()), cutoff)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("sweep: census failed; retrying next second", "err", err)
		}
		return
	}
	if s.massSilence(c.Online, c.Silent) || c.Overdue == 0 {
		return
	}
	hosts, err := s.shared.MarkOffline(ctx, cutoff, now)
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

// forgetRemoved marks hosts another replica deprovisioned.
func (s *Server) forgetRemoved(ids []string) {
	for _, id := range ids {
		if h := s.hosts.get(id); h != nil {
			h.mu.Lock()
			h.status, h.dirtyStatus, h.report = store.StatusRemoved, false, nil
			h.mu.Unlock()
		}
	}
}

// loadShared loads a host another replica registered.
func (s *Server) loadShared(ctx context.Context, id string) *hostState {
	if s.shared == nil || !idRE.MatchString(id) {
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

// reloadShared refreshes a host's token and status from shared storage
// (another replica may have registered it again), at most once per
// reloadEvery. It reports whether anything was reloaded.
func (s *Server) reloadShared(ctx context.Context, st *hostState, now time.Time) bool {
	if s.shared == nil {
		return false
	}
	st.mu.Lock()
	if now.Sub(st.reloaded) < reloadEvery {
		st.mu.Unlock()
		return false
	}
	st.reloaded = now
	st.mu.Unlock()
	h, err := s.store.GetHost(ctx, st.id)
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
func (s *Server) refreshChannels(ctx context.Context) {
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

// Leader reports whether this replica runs the liveness sweeper: always
// without shared storage, while it holds the sweeper lock with it.
func (s *Server) Leader() bool {
	return s.shared == nil || s.leader.Load()
}

// statusCounts caches the stored host counts by status for a second, so
// that one scrape of /metrics reads them once.
type statusCounts struct {
	mu     sync.Mutex
	at     time.Time
	counts map[string]int
}

// sharedCount is the number of stored hosts with status, from shared
// storage (-1 when it cannot be read).
func (s *Server) sharedCount(status string) int {
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) > time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		counts, err := s.shared.CountByStatus(ctx)
		if err != nil {
			return -1
		}
		c.at, c.counts = time.Now(), counts
	}
	return c.counts[status]
}
