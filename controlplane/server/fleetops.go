package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// Paths of the fleet-operations API.
const (
	PathEvents    = "/v1/events"
	PathRollouts  = "/v1/admin/rollouts"
	PathDashboard = "/dashboard"
)

// FleetOpsConfig configures rollouts, derived events, webhooks and the
// dashboard. The zero value works: default rollout policy, no webhooks.
type FleetOpsConfig struct {
	// Rollout fills the zero fields of a rollout request's policy.
	Rollout rollout.Policy
	// Tick is how often rollouts advance and tunnels are checked
	// (default 1s).
	Tick time.Duration
	// TunnelWindow is how long a tunnel may be not ready before an event
	// (default 2m).
	TunnelWindow time.Duration
	// Hooks are the webhooks; Webhook tunes their delivery (its Feed and
	// Hooks are set by the server).
	Hooks   []events.Hook
	Webhook events.Dispatcher
	// SecureCookie marks the dashboard session cookie Secure (behind TLS).
	SecureCookie bool
	// Events bounds the stored events (zero fields: store defaults);
	// TrimEvery is how often they are trimmed (default 1m).
	Events    store.EventPolicy
	TrimEvery time.Duration
}

// fleetOps is the server's rollouts, event watcher, webhooks and dashboard.
type fleetOps struct {
	rollouts *rollout.Manager
	watch    *events.Watcher
	dash     *dashboard.Dashboard

	mu      sync.Mutex
	gen     uint64
	replies map[string][]byte

	// Owned by the tick goroutine.
	synced    time.Time
	wasLeader bool
}

func (s *Server) initFleetOps(ctx context.Context) error {
	cfg := s.cfg.Fleet
	f := &fleetOps{watch: events.NewWatcher(cfg.TunnelWindow), replies: map[string][]byte{}}
	s.store.SetEventPolicy(cfg.Events)
	m, err := rollout.New(ctx, rollout.Options{
		Store: s.store, Hosts: s.channelHosts, ChannelChanged: s.setChannel, Emit: s.addEvents,
		Defaults: cfg.Rollout, Logger: s.log.With("component", "rollout"), Now: s.cfg.Now,
	})
	if err != nil {
		return err
	}
	f.rollouts = m
	// Seed the last stored reports: an unchanged heartbeat is never decoded
	// again, so a restarted server would otherwise not see them.
	hosts, err := s.store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return err
	}
	for _, h := range hosts {
		var rep api.HeartbeatRequest
		if h.Report != "" && json.Unmarshal([]byte(h.Report), &rep) == nil {
			m.Observe(h.ID, &rep)
			f.watch.Observe(h.ID, s.cfg.Now(), &rep)
		}
	}
	f.dash = dashboard.New(dashboard.Options{
		Source: dashSource{s}, AdminToken: s.cfg.AdminToken, Logger: s.log.With("component", "dashboard"),
		Now: s.cfg.Now, SecureCookie: cfg.SecureCookie, Refresh: 5 * time.Second, Throttle: s.store,
	})
	s.fleet = f
	return nil
}

// channelHosts lists the online hosts of a channel, for planning waves:
// from the live table, or with shared liveness from the store, which every
// replica's hosts reach.
func (s *Server) channelHosts(ctx context.Context, channel string) ([]string, error) {
	var out []string
	if s.shared != nil {
		hosts, err := s.store.ListHosts(ctx, store.HostFilter{Channel: channel, Status: store.StatusOnline})
		if err != nil {
			return nil, err
		}
		for _, h := range hosts {
			out = append(out, h.ID)
		}
		return out, nil
	}
	for _, h := range s.hosts.all() {
		h.mu.Lock()
		if h.channel == channel && h.status == store.StatusOnline {
			out = append(out, h.id)
		}
		h.mu.Unlock()
	}
	return out, nil
}

// observe feeds a changed heartbeat to the rollouts and the event watcher.
func (s *Server) observe(hostID string, now time.Time, req *api.HeartbeatRequest) {
	s.fleet.rollouts.Observe(hostID, req)
	if evs := s.fleet.watch.Observe(hostID, now, req); len(evs) > 0 {
		s.addEvents(evs...)
	}
}

// fleetReply returns the encoded heartbeat reply for a host whose channel
// is under a rollout, nil when the channel's own images apply.
func (s *Server) fleetReply(channel, hostID string) []byte {
	s.chMu.RLock()
	c, ok := s.channels[channel]
	s.chMu.RUnlock()
	if !ok {
		return nil
	}
	f := s.fleet
	gen := f.rollouts.Generation()
	key, ds, ok := f.rollouts.Desired(channel, hostID, c.Revision)
	if !ok {
		return nil
	}
	ck := channel + "\x00" + key + "\x00" + strconv.FormatInt(c.Revision, 10)
	f.mu.Lock()
	defer f.mu.Unlock()
	if gen != f.gen {
		f.gen, f.replies = gen, map[string][]byte{}
	}
	if b, ok := f.replies[ck]; ok {
		return b
	}
	b, _ := json.Marshal(api.HeartbeatResponse{IntervalMS: s.cfg.Interval.Milliseconds(), Desired: ds})
	b = append(b, '\n')
	f.replies[ck] = b
	return b
}

// startFleetOps runs rollout ticks, the tunnel sweep and the webhook
// dispatcher until ctx ends; the returned func waits for them.
func (s *Server) startFleetOps(ctx context.Context) (wait func()) {
	tick := s.cfg.Fleet.Tick
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
				s.fleetTick(ctx)
			}
		}
	})
	ret := events.Retention{Store: s.store, Every: s.cfg.Fleet.TrimEvery, Now: s.cfg.Now, Logger: s.log.With("component", "retention")}
	wg.Go(func() { ret.Run(ctx) })
	if len(s.cfg.Fleet.Hooks) > 0 {
		d := s.cfg.Fleet.Webhook
		d.Feed, d.Hooks = s.store, s.cfg.Fleet.Hooks
		if d.Logger == nil {
			d.Logger = s.log.With("component", "webhooks")
		}
		wg.Go(func() { d.Run(ctx) })
	}
	return wg.Wait
}

// fleetTick advances rollouts and sweeps tunnels. With shared liveness
// (several replicas on PostgreSQL) only the sweeper-lock holder advances
// rollouts, from the reports every replica flushed; the others reload the
// stored rollouts to serve the same desired state.
func (s *Server) fleetTick(ctx context.Context) {
	f := s.fleet
	if evs := f.watch.Sweep(s.cfg.Now()); len(evs) > 0 {
		s.addEvents(evs...)
	}
	if s.shared == nil {
		f.rollouts.Tick(ctx)
		return
	}
	now := time.Now()
	due := now.Sub(f.synced) >= s.cfg.FlushWindow
	leader := s.Leader()
	if due || (leader && !f.wasLeader) {
		f.synced = now
		if err := f.rollouts.Reload(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reload rollouts failed; retrying", "err", err)
		}
		if leader && f.rollouts.Active() {
			s.loadRemoteReports(ctx)
		}
	}
	f.wasLeader = leader
	if leader {
		f.rollouts.Tick(ctx)
	}
}

// loadRemoteReports feeds the rollouts the stored reports of hosts, all
// replicas' flushes included, except where this replica holds a newer one
// not yet flushed.
func (s *Server) loadRemoteReports(ctx context.Context) {
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
			s.fleet.rollouts.Observe(h.ID, &rep)
		}
	}
}

func (s *Server) fleetRoutes(mux *http.ServeMux, admin func(string, http.HandlerFunc) http.HandlerFunc) {
	mux.HandleFunc("GET "+PathEvents, admin("events_feed", s.handleEventFeed))
	mux.HandleFunc("GET "+PathRollouts, admin("admin_rollouts", s.handleListRollouts))
	mux.HandleFunc("POST /v1/admin/channels/{name}/rollouts", admin("admin_rollout_start", s.handleStartRollout))
	mux.HandleFunc("GET /v1/admin/channels/{name}/rollout", admin("admin_rollout_get", s.handleGetRollout))
	mux.HandleFunc("POST /v1/admin/channels/{name}/rollout/{action}", admin("admin_rollout_action", s.handleRolloutAction))
	dash := s.instrument("dashboard", s.fleet.dash.ServeHTTP)
	mux.HandleFunc(PathDashboard, dash)
	mux.HandleFunc(PathDashboard+"/", dash)
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

// RolloutList is the reply to GET /v1/admin/rollouts.
type RolloutList struct {
	Rollouts []rollout.Rollout `json:"rollouts"`
}

func (s *Server) handleListRollouts(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, RolloutList{Rollouts: s.fleet.rollouts.List()})
}

func (s *Server) rolloutError(w http.ResponseWriter, op string, err error) {
	switch {
	case errors.Is(err, rollout.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error(), "images")
	case errors.Is(err, rollout.ErrNoRollout):
		writeError(w, http.StatusNotFound, err.Error(), "")
	case errors.Is(err, rollout.ErrState):
		writeError(w, http.StatusConflict, err.Error(), "")
	default:
		s.internal(w, op, err)
	}
}

func (s *Server) handleStartRollout(w http.ResponseWriter, r *http.Request) {
	var req rollout.Request
	if !decodeRequest(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if !idRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, "channel: 1-128 of [A-Za-z0-9._:-]", "channel")
		return
	}
	ro, err := s.fleet.rollouts.Start(r.Context(), name, req)
	if err != nil {
		s.rolloutError(w, "start rollout", err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

func (s *Server) handleGetRollout(w http.ResponseWriter, r *http.Request) {
	ro, err := s.fleet.rollouts.Get(r.PathValue("name"))
	if err != nil {
		s.rolloutError(w, "get rollout", err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

// RolloutAction is the optional body of POST .../rollout/{pause,resume,rollback}.
type RolloutAction struct {
	Reason string `json:"reason,omitempty"`
}

func (s *Server) handleRolloutAction(w http.ResponseWriter, r *http.Request) {
	var req RolloutAction
	if r.ContentLength != 0 && !decodeRequest(w, r, &req) {
		return
	}
	if len(req.Reason) > 500 {
		writeError(w, http.StatusBadRequest, "reason: at most 500 bytes", "reason")
		return
	}
	name, m := r.PathValue("name"), s.fleet.rollouts
	var (
		ro  rollout.Rollout
		err error
	)
	switch r.PathValue("action") {
	case "pause":
		ro, err = m.Pause(r.Context(), name, req.Reason)
	case "resume":
		ro, err = m.Resume(r.Context(), name)
	case "rollback":
		ro, err = m.Rollback(r.Context(), name, req.Reason)
	default:
		writeError(w, http.StatusNotFound, "unknown rollout action: want pause, resume or rollback", "")
		return
	}
	if err != nil {
		s.rolloutError(w, r.PathValue("action")+" rollout", err)
		return
	}
	writeJSON(w, http.StatusOK, ro)
}

// dashSource gives the dashboard the server's view, secrets excluded
// (api.Host and the events carry none).
type dashSource struct{ s *Server }

func (d dashSource) Hosts(ctx context.Context) ([]api.Host, error) {
	hosts, err := d.s.store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, d.s.apiHost(h))
	}
	return out, nil
}

func (d dashSource) Rollouts(context.Context) ([]rollout.Rollout, error) {
	return d.s.fleet.rollouts.List(), nil
}

func (d dashSource) Events(ctx context.Context, limit int) ([]events.Event, error) {
	evs, err := d.s.store.Events(ctx, "", limit)
	if err != nil {
		return nil, err
	}
	out := make([]events.Event, 0, len(evs))
	for i := len(evs) - 1; i >= 0; i-- { // newest first
		out = append(out, events.FromStore(evs[i]))
	}
	return out, nil
}
