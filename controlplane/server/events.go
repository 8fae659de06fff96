package server

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// EventsConfig configures derived events and webhooks. The zero value
// works: no webhooks.
type EventsConfig struct {
	// TunnelWindow is how long a tunnel may be not ready before an event
	// (default 2m).
	TunnelWindow time.Duration
	// Hooks are the webhooks; Webhook tunes their delivery (its Feed and
	// Hooks are set by the server).
	Hooks   []events.Hook
	Webhook events.Dispatcher
	// Policy bounds the stored events (zero fields: store defaults);
	// TrimEvery is how often they are trimmed (default 1m).
	Policy    store.EventPolicy
	TrimEvery time.Duration
}

func (s *Server) initEvents() {
	s.watch = events.NewWatcher(s.cfg.Events.TunnelWindow)
	s.store.SetEventPolicy(s.cfg.Events.Policy)
}

// observe feeds a changed heartbeat to the rollouts and the event watcher.
func (s *Server) observe(hostID string, now time.Time, req *api.HeartbeatRequest) {
	s.rollouts.Observe(hostID, req)
	if evs := s.watch.Observe(hostID, now, req); len(evs) > 0 {
		s.addEvents(evs...)
	}
}

// startBackground runs the rollout ticks, the tunnel sweep, the event
// retention and the webhook dispatcher until ctx ends; the returned func waits for them.
func (s *Server) startBackground(ctx context.Context) (wait func()) {
	tick := s.cfg.Rollouts.Tick
	if tick <= 0 {
		tick = time.Second
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sweepTunnels()
				s.lv.advance(ctx)
			}
		}
	})
	ret := events.Retention{Store: s.store, Every: s.cfg.Events.TrimEvery, Now: s.cfg.Now, Logger: s.log.With("component", "retention")}
	wg.Go(func() { ret.Run(ctx) })
	if len(s.cfg.Events.Hooks) > 0 {
		d := s.cfg.Events.Webhook
		d.Feed, d.Hooks = s.store, s.cfg.Events.Hooks
		if d.Logger == nil {
			d.Logger = s.log.With("component", "webhooks")
		}
		wg.Go(func() { d.Run(ctx) })
	}
	return wg.Wait
}

// sweepTunnels records an event for every tunnel not ready too long.
func (s *Server) sweepTunnels() {
	if evs := s.watch.Sweep(s.cfg.Now()); len(evs) > 0 {
		s.addEvents(evs...)
	}
}

func (s *Server) handleEventFeed(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, limit := int64(0), 100
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "since: want an event ID (0 or more)", "since")
			return
		}
		since = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit: want 1-1000", "limit")
			return
		}
		limit = n
	}
	evs, err := s.store.EventsSince(r.Context(), since, limit)
	if err != nil {
		s.internal(w, "list events", err)
		return
	}
	writeJSON(w, http.StatusOK, events.NewPage(evs, since))
}
