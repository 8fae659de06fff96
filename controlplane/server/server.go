// Package server is the molecule control plane's HTTP API: host
// registration with attestation, heartbeats kept in memory and flushed to the
// store in one transaction per window, liveness judged on the server's clock,
// and the admin API.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
	"github.com/molecule-ai/molecule-agent/controlplane/attest"
	"github.com/molecule-ai/molecule-agent/controlplane/dashboard"
	"github.com/molecule-ai/molecule-agent/controlplane/events"
	"github.com/molecule-ai/molecule-agent/controlplane/rollout"
	"github.com/molecule-ai/molecule-agent/controlplane/store"
)

// MaxFlushWindow is the longest allowed flush window.
const MaxFlushWindow = 5 * time.Second

// Config configures a Server. Store and AdminToken are required.
type Config struct {
	Store store.Store
	// Verifier checks IMDS proofs; nil refuses them (enrollment only).
	Verifier   *attest.Verifier
	AdminToken secret.Secret
	Logger     *slog.Logger
	// Registry receives the server's metrics; default: a new registry.
	Registry *prometheus.Registry
	// Interval is the heartbeat interval given to agents (default 10s).
	Interval time.Duration
	// Grace is added to 3 missed intervals before a host is offline
	// (default 2s).
	Grace time.Duration
	// FlushWindow is how often live state is written (default and max 5s).
	FlushWindow time.Duration
	// HostRate and HostBurst bound each host's requests per second
	// (defaults 1/s, burst 5).
	HostRate  float64
	HostBurst float64
	// ShedFactor sets the global budget for agent requests: ShedFactor ×
	// hosts ÷ Interval per second (at least 200/s); above it requests get
	// 429 with a Retry-After spread over one interval. Default 1.5;
	// negative disables shedding.
	ShedFactor float64
	// MassSilenceShare: when more than this share of online hosts are
	// silent at once (and at least MassSilenceMin of them), nobody is
	// marked offline. Default 0.5; 1 or more disables the guard.
	MassSilenceShare float64
	MassSilenceMin   int
	// RestartHold is how long after its own start the control plane
	// marks nobody offline (default and minimum: one window, 3 intervals +
	// grace). Raise it above the agents' longest retry backoff plus an
	// interval when they may still be backing off from an outage.
	RestartHold time.Duration
	// Unshared keeps liveness in this process even on PostgreSQL (one
	// replica only). By default a PostgreSQL store is shared: replicas
	// flush heartbeats into it and the sweeper-lock holder judges.
	Unshared bool
	// Now is the server's clock (default time.Now).
	Now func() time.Time
	// Rollouts, Events and Dashboard configure what the server runs
	// beside the agents' API.
	Rollouts  RolloutsConfig
	Events    EventsConfig
	Dashboard DashboardConfig
}

// Server is the control plane. Create it with New, serve Handler, and run
// Run until shutdown.
type Server struct {
	cfg     Config
	log     *slog.Logger
	store   store.Store
	adminH  [32]byte
	started time.Time
	hosts   *table
	m       *metrics
	mux     *http.ServeMux

	chMu     sync.RWMutex
	channels map[string]store.Channel
	replies  replyCache

	evMu    sync.Mutex
	pending []store.Event

	lv     liveness
	shed   *shedder
	lm     *liveMetrics
	inMass atomic.Bool

	regMu [64]sync.Mutex

	rollouts *rollout.Manager
	watch    *events.Watcher
	dash     *dashboard.Dashboard

	probedAt atomic.Uint64 // store write count at the last storage check
}

// New loads the live table from the store and returns the server. The
// server's start time, from which nobody is declared offline for one full
// window, is now.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: no store")
	}
	if cfg.AdminToken.IsZero() {
		return nil, errors.New("admin token is empty: set --admin-token-file or MOLECULE_CP_ADMIN_TOKEN")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Interval = orDefault(cfg.Interval, 10*time.Second)
	cfg.Grace = orDefault(cfg.Grace, 2*time.Second)
	cfg.FlushWindow = orDefault(cfg.FlushWindow, MaxFlushWindow)
	if cfg.FlushWindow > MaxFlushWindow {
		return nil, fmt.Errorf("flush window %s: must be at most %s", cfg.FlushWindow, MaxFlushWindow)
	}
	if cfg.HostRate <= 0 {
		cfg.HostRate = 1
	}
	if cfg.HostBurst < 1 {
		cfg.HostBurst = 5
	}
	if cfg.ShedFactor == 0 {
		cfg.ShedFactor = 1.5
	}
	if cfg.MassSilenceShare <= 0 {
		cfg.MassSilenceShare = 0.5
	}
	if cfg.MassSilenceMin <= 0 {
		cfg.MassSilenceMin = 10
	}
	cfg.RestartHold = max(cfg.RestartHold, 3*cfg.Interval+cfg.Grace)
	s := &Server{
		cfg: cfg, log: cfg.Logger, store: cfg.Store, adminH: sha(cfg.AdminToken.Reveal()),
		started: cfg.Now(), hosts: newTable(), channels: map[string]store.Channel{},
	}
	hosts, err := cfg.Store.ListHosts(ctx, store.HostFilter{})
	if err != nil {
		return nil, fmt.Errorf("load hosts: %w", err)
	}
	for _, h := range hosts {
		s.hosts.put(newHostState(h))
	}
	chans, err := cfg.Store.Channels(ctx)
	if err != nil {
		return nil, fmt.Errorf("load channels: %w", err)
	}
	for _, c := range chans {
		s.channels[c.Name] = c
	}
	s.lv = newLiveness(s)
	s.shed = newShedder(cfg.ShedFactor, cfg.Interval, s.hosts.len)
	s.m = newMetrics(cfg.Registry, s)
	s.lm = newLiveMetrics(cfg.Registry)
	if err := s.initRollouts(ctx); err != nil {
		return nil, fmt.Errorf("load rollouts: %w", err)
	}
	s.routes()
	s.log.Info("control plane state loaded", "hosts", len(hosts), "channels", len(chans),
		"interval", cfg.Interval, "offline_after", s.offlineAfter(), "flush_window", cfg.FlushWindow,
		"liveness", fmt.Sprintf("%T", s.lv))
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// offlineAfter is how long a host may be silent: 3 intervals plus grace.
func (s *Server) offlineAfter() time.Duration { return 3*s.cfg.Interval + s.cfg.Grace }

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathRegister, s.instrument("register", s.handleRegister))
	mux.HandleFunc("POST /v1/hosts/{id}/heartbeat", s.instrument("heartbeat", s.handleHeartbeat))
	mux.HandleFunc("GET "+api.PathHealthz, s.instrument("healthz", s.handleHealthz))
	mux.Handle("GET "+api.PathMetrics, promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	admin := func(route string, h http.HandlerFunc) http.HandlerFunc { return s.instrument(route, s.requireAdmin(h)) }
	mux.HandleFunc("PUT /v1/admin/instances/{instance_id}", admin("admin_declare", s.handleDeclare))
	mux.HandleFunc("POST "+api.PathAdminTokens, admin("admin_token", s.handleCreateToken))
	mux.HandleFunc("GET "+api.PathAdminHosts, admin("admin_list", s.handleListHosts))
	mux.HandleFunc("GET /v1/admin/hosts/{id}", admin("admin_get", s.handleGetHost))
	mux.HandleFunc("POST /v1/admin/hosts/{id}/deprovision", admin("admin_deprovision", s.handleDeprovision))
	mux.HandleFunc("GET "+api.PathAdminEvents, admin("admin_events", s.handleEvents))
	mux.HandleFunc("PUT /v1/admin/channels/{name}", admin("admin_channel", s.handleSetChannel))
	mux.HandleFunc("PUT "+api.PathAdminOrgs+"/{org}/tunnel", admin("admin_org_tunnel", s.handleBindTunnel))
	mux.HandleFunc("GET "+api.PathEvents, admin("events_feed", s.handleEventFeed))
	s.rolloutRoutes(mux, admin)
	dash := s.instrument("dashboard", s.dash.ServeHTTP)
	mux.HandleFunc(PathDashboard, dash)
	mux.HandleFunc(PathDashboard+"/", dash)
	s.mux = mux
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler { return s.mux }

// Run sweeps liveness every tenth of an interval (100 ms to 1 s), flushes
// live state every window, and runs the rollout ticks, the tunnel sweep and
// the webhooks until ctx ends, then flushes once more.
func (s *Server) Run(ctx context.Context) error {
	sweep := time.NewTicker(s.sweepEvery())
	defer sweep.Stop()
	flush := time.NewTicker(s.cfg.FlushWindow)
	defer flush.Stop()
	defer s.lv.close()
	background := s.startBackground(ctx)
	defer background()
	for {
		select {
		case <-ctx.Done():
			background() // their last events go out with the final flush
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := s.lv.window(fctx, s.cfg.Now()); err != nil {
				return fmt.Errorf("final flush: %w", err)
			}
			return nil
		case <-sweep.C:
			s.lv.sweep(ctx, s.cfg.Now())
		case <-flush.C:
			if err := s.lv.window(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
				s.log.Warn("flush live state failed; retrying next window", "err", err)
			}
			s.checkStorage(ctx)
		}
	}
}

// Leader reports whether this control plane judges liveness: always when
// alone, while it holds the sweeper lock among replicas.
func (s *Server) Leader() bool { return s.lv.judges() }

// maxPending bounds the events waiting for a flush (a storage outage under
// an event flood); beyond it new events are dropped, counted in the log.
const maxPending = 100_000

func (s *Server) addEvents(evs ...store.Event) {
	s.evMu.Lock()
	room := max(0, maxPending-len(s.pending))
	dropped := max(0, len(evs)-room)
	s.pending = append(s.pending, evs[:len(evs)-dropped]...)
	s.evMu.Unlock()
	if dropped > 0 {
		s.log.Warn("events dropped: too many wait for storage", "dropped", dropped, "pending", maxPending)
	}
}

// setChannel records a channel's new images; replies keyed by its old
// revision are not served again.
func (s *Server) setChannel(c store.Channel) {
	s.chMu.Lock()
	s.channels[c.Name] = c
	s.chMu.Unlock()
}
