package server

import (
	"context"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// liveness decides which hosts are online and keeps the store in step with
// the heartbeats this control plane takes. It is chosen once, at start
// (newLiveness), and no handler asks which one runs:
//
//   - alone: one control plane. The live table in memory is the truth; it
//     judges silence itself and flushes statuses to SQLite or PostgreSQL.
//   - replicas: several control planes on one PostgreSQL database. Each
//     flushes the heartbeats it took; the holder of the sweeper lock judges
//     silence from the database, whose statuses are the truth.
type liveness interface {
	// authenticate returns the live state of host id and whether token is
	// its current token; nil when no such host is known. Replicas load a
	// host, or its new token, that another replica registered.
	authenticate(ctx context.Context, id, token string, now time.Time) (*hostState, bool)
	// returned marks h (its mu held, not online) online again and returns
	// the event to record now, or nil when the flush records it.
	returned(h *hostState, now time.Time) *store.Event
	// sweep judges silence once: hosts quiet too long go offline.
	sweep(ctx context.Context, now time.Time)
	// window ends one flush window: live state and pending events are
	// written in one transaction (on failure they stay pending).
	window(ctx context.Context, now time.Time) error
	// advance moves the rollouts on by one tick.
	advance(ctx context.Context)
	// status is the status to show for a host whose live status is live
	// and stored status is stored.
	status(live, stored string) string
	// count is the number of hosts with status.
	count(status string) int
	// online lists the IDs of the channel's online hosts.
	online(ctx context.Context, channel string) ([]string, error)
	// judges reports whether this control plane judges liveness now.
	judges() bool
	// close releases what it holds (the sweeper lock).
	close()
}

// newLiveness picks the liveness model: replicas on a PostgreSQL store
// unless cfg.Unshared, alone otherwise.
func newLiveness(s *Server) liveness {
	if sh := store.SharedOf(s.store); sh != nil && !s.cfg.Unshared {
		return &replicas{s: s, shared: sh}
	}
	return alone{s: s}
}

// alone is the liveness of a single control plane: judged in memory.
type alone struct{ s *Server }

func (a alone) authenticate(_ context.Context, id, token string, _ time.Time) (*hostState, bool) {
	h := a.s.hosts.get(id)
	if h == nil {
		return nil, false
	}
	return h, h.tokenMatches(token)
}

func (a alone) returned(h *hostState, now time.Time) *store.Event {
	h.status, h.dirtyStatus = store.StatusOnline, true
	return &store.Event{HostID: h.id, Type: "online", Detail: "heartbeat after silence", At: now}
}

// sweep marks silent online hosts offline. A host's silence is counted from
// its last heartbeat or from the server's start, whichever is later, so a
// restarted control plane declares nobody offline for one full window (or
// the longer RestartHold). When more than the mass-silence share of online
// hosts are silent at once, the control plane assumes the fault is its own
// (its network, its clock, its load balancer) and marks nobody offline until
// they are heard again.
func (a alone) sweep(_ context.Context, now time.Time) {
	s := a.s
	after, suspect := s.offlineAfter(), s.suspectAfter(0)
	var overdue []*hostState
	online, silent := 0, 0
	for _, h := range s.hosts.all() {
		h.mu.Lock()
		if h.status == store.StatusOnline {
			online++
			quiet := now.Sub(later(h.lastSeen, s.quietFrom()))
			if quiet > suspect {
				silent++
			}
			if quiet > after {
				overdue = append(overdue, h)
			}
		}
		h.mu.Unlock()
	}
	if s.massSilence(online, silent) || len(overdue) == 0 {
		return
	}
	var evs []store.Event
	for _, h := range overdue {
		h.mu.Lock()
		if h.status == store.StatusOnline && now.Sub(later(h.lastSeen, s.quietFrom())) > after {
			h.status, h.dirtyStatus = store.StatusOffline, true
			evs = append(evs, store.Event{HostID: h.id, Type: "offline", Detail: "silent since " + h.lastSeen.UTC().Format(time.RFC3339), At: now})
			s.log.Info("host offline", "host", h.id, "last_seen", h.lastSeen)
		}
		h.mu.Unlock()
	}
	if len(evs) > 0 {
		s.m.offline.Add(float64(len(evs)))
		s.addEvents(evs...)
	}
}

// window judges once more, so the flush carries the latest statuses.
func (a alone) window(ctx context.Context, now time.Time) error {
	a.sweep(ctx, now)
	return a.s.flush(ctx, func(ctx context.Context, ups []store.LiveUpdate, evs []store.Event) error {
		return a.s.store.Flush(ctx, ups, evs)
	})
}

func (a alone) advance(ctx context.Context) { a.s.rollouts.Tick(ctx) }

func (alone) status(live, _ string) string { return live }

func (a alone) count(status string) int {
	n := 0
	for _, h := range a.s.hosts.all() {
		h.mu.Lock()
		if h.status == status {
			n++
		}
		h.mu.Unlock()
	}
	return n
}

func (a alone) online(_ context.Context, channel string) ([]string, error) {
	var out []string
	for _, h := range a.s.hosts.all() {
		h.mu.Lock()
		if h.channel == channel && h.status == store.StatusOnline {
			out = append(out, h.id)
		}
		h.mu.Unlock()
	}
	return out, nil
}

func (alone) judges() bool { return true }

func (alone) close() {}

// tokenMatches reports whether token is the host's current token.
func (h *hostState) tokenMatches(token string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return attest.TokenMatches(h.tokenHash, token)
}
