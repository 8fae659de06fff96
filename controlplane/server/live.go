package server

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// hostState is one host's live state. The in-memory status is the truth;
// the store catches up at the next flush.
type hostState struct {
	mu          sync.Mutex
	id          string
	instanceKey string
	channel     string
	tokenHash   string
	status      string
	dirtyStatus bool
	lastSeen    time.Time
	flushedSeen time.Time
	reportHash  [32]byte
	report      []byte // pending report, nil once flushed
	tunnelID    string
	version     string
	tokens      float64
	refilled    time.Time
	reloaded    time.Time // last reload from shared storage
}

func newHostState(h store.Host) *hostState {
	st := &hostState{
		id: h.ID, instanceKey: h.InstanceKey, channel: h.Channel, tokenHash: h.TokenHash, status: h.Status,
		lastSeen: h.LastSeen, flushedSeen: h.LastSeen, tunnelID: h.TunnelID, version: h.AgentVersion,
	}
	if h.Report != "" {
		st.reportHash = sha256.Sum256([]byte(h.Report))
	}
	return st
}

// allow takes one token from the host's bucket; when empty it returns how
// long until the next token.
func (h *hostState) allow(now time.Time, rate, burst float64) (bool, time.Duration) {
	if h.refilled.IsZero() {
		h.tokens, h.refilled = burst, now
	}
	h.tokens = min(burst, h.tokens+now.Sub(h.refilled).Seconds()*rate)
	h.refilled = now
	if h.tokens >= 1 {
		h.tokens--
		return true, 0
	}
	return false, time.Duration((1 - h.tokens) / rate * float64(time.Second))
}

// table indexes live host states by host ID and instance key.
type table struct {
	mu    sync.RWMutex
	byID  map[string]*hostState
	byKey map[string]*hostState
}

func newTable() *table {
	return &table{byID: map[string]*hostState{}, byKey: map[string]*hostState{}}
}

func (t *table) put(h *hostState) {
	t.mu.Lock()
	t.byID[h.id] = h
	t.byKey[h.instanceKey] = h
	t.mu.Unlock()
}

// putIfAbsent stores h unless the table has the host; it returns the
// table's state of the host.
func (t *table) putIfAbsent(h *hostState) *hostState {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.byID[h.id]; cur != nil {
		return cur
	}
	t.byID[h.id] = h
	t.byKey[h.instanceKey] = h
	return h
}

func (t *table) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byID)
}

func (t *table) get(id string) *hostState {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byID[id]
}

func (t *table) byInstance(key string) *hostState {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.byKey[key]
}

func (t *table) all() []*hostState {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]*hostState, 0, len(t.byID))
	for _, h := range t.byID {
		out = append(out, h)
	}
	return out
}

// pendingEvents returns the events not flushed yet, of one host or ("")
// of all.
func (s *Server) pendingEvents(host string) []store.Event {
	s.evMu.Lock()
	defer s.evMu.Unlock()
	var out []store.Event
	for _, e := range s.pending {
		if host == "" || e.HostID == host {
			out = append(out, e)
		}
	}
	return out
}

// sweepEvery is how often liveness is judged: a tenth of the interval,
// between 100 ms and 1 s, so a host is offline at most that long after its
// window.
func (s *Server) sweepEvery() time.Duration {
	return min(max(s.cfg.Interval/10, 100*time.Millisecond), time.Second, s.cfg.FlushWindow)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type inflight struct {
	h      *hostState
	status string
	report []byte
}

// flush collects every host changed since the last flush, and the pending
// events, and hands them to write, one store transaction. On failure
// everything stays pending.
func (s *Server) flush(ctx context.Context, write func(context.Context, []store.LiveUpdate, []store.Event) error) error {
	var ups []store.LiveUpdate
	var fl []inflight
	for _, h := range s.hosts.all() {
		h.mu.Lock()
		if h.lastSeen.After(h.flushedSeen) || h.dirtyStatus || h.report != nil {
			u := store.LiveUpdate{HostID: h.id, LastSeen: h.lastSeen}
			f := inflight{h: h}
			if h.dirtyStatus {
				u.Status, f.status = h.status, h.status
			}
			if h.report != nil {
				u.Report, u.TunnelID, u.AgentVersion, f.report = string(h.report), h.tunnelID, h.version, h.report
			}
			ups = append(ups, u)
			fl = append(fl, f)
		}
		h.mu.Unlock()
	}
	s.evMu.Lock()
	evs := s.pending
	s.pending = nil
	s.evMu.Unlock()
	if len(ups) == 0 && len(evs) == 0 {
		return nil
	}
	start := time.Now()
	err := write(ctx, ups, evs)
	s.m.flushDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.m.flushErrors.Inc()
		s.evMu.Lock()
		s.pending = append(evs, s.pending...)
		s.evMu.Unlock()
		return err
	}
	s.m.flushes.Inc()
	s.m.flushHosts.Set(float64(len(ups)))
	for i, f := range fl {
		h := f.h
		h.mu.Lock()
		if ups[i].LastSeen.After(h.flushedSeen) {
			h.flushedSeen = ups[i].LastSeen
		}
		if f.status != "" && h.status == f.status {
			h.dirtyStatus = false
		}
		if len(f.report) > 0 && len(h.report) > 0 && &h.report[0] == &f.report[0] {
			h.report = nil
		}
		h.mu.Unlock()
	}
	return nil
}
